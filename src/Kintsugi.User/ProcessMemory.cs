namespace Kintsugi.User;

/// <summary>
/// Reads and writes another process's memory through <c>/proc/PID/mem</c>, which (for a tracer or root) also
/// writes read-only code pages: the kernel copies the page on write, as it does for a debugger's breakpoint.
/// </summary>
public sealed class ProcessMemory : IDisposable
{
    private const int OReadWrite = 2;
    private const int OReadOnly = 0;
    private const int OCloexec = 0x80000;
    private readonly int _fd;

    public ProcessMemory(int pid, bool writable = false)
    {
        Pid = pid;
        _fd = Native.Open($"/proc/{pid}/mem", (writable ? OReadWrite : OReadOnly) | OCloexec, out var errno);
        if (_fd < 0)
            throw new UserPatchException($"cannot open the memory of process {pid}: {Native.ErrnoMessage(errno)}" +
                (errno is 1 or 13 ? " (run as root, or with CAP_SYS_PTRACE)" : ""),
                errno == 2 ? ExitCode.NotFound : ExitCode.Environment);
    }

    public int Pid { get; }

    public byte[] Read(ulong address, int length)
    {
        var buffer = new byte[length];
        var read = Native.Pread(_fd, buffer, (long)address);
        if (read != length)
            throw new UserPatchException($"cannot read {length} bytes at 0x{address:x} in process {Pid}: " +
                (read < 0 ? Native.ErrnoMessage((int)-read) : $"only {read} bytes readable"), ExitCode.Environment);
        return buffer;
    }

    /// <summary>Reads what is readable: fewer bytes than asked when the range ends in unmapped memory.</summary>
    public int TryRead(ulong address, Span<byte> buffer)
    {
        var read = Native.Pread(_fd, buffer, (long)address);
        return read < 0 ? 0 : (int)read;
    }

    public void Write(ulong address, ReadOnlySpan<byte> bytes)
    {
        var written = Native.Pwrite(_fd, bytes, (long)address);
        if (written != bytes.Length)
            throw new UserPatchException($"cannot write {bytes.Length} bytes at 0x{address:x} in process {Pid}: " +
                (written < 0 ? Native.ErrnoMessage((int)-written) : $"only {written} written"), ExitCode.Environment);
    }

    public void Dispose() => Native.Close(_fd);
}
