using System.Runtime.InteropServices;

namespace Kintsugi.Kernel;

/// <summary>The few system calls the runtime needs that .NET does not wrap.</summary>
internal static partial class Native
{
    private const long SysFinitModule = 313;   // x86-64
    private const long SysDeleteModule = 176;  // x86-64
    private const int ONonblock = 0x800;
    private const int SyslogActionReadAll = 3;
    private const int SyslogActionSizeBuffer = 10;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long SyscallFdStringInt(long number, int fd, string arg, int flags);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long SyscallStringInt(long number, string arg, int flags);

    [LibraryImport("libc", EntryPoint = "klogctl", SetLastError = true)]
    private static partial int KlogCtl(int type, Span<byte> buffer, int length);

    [LibraryImport("libc", EntryPoint = "klogctl", SetLastError = true)]
    private static partial int KlogCtlNoBuffer(int type, IntPtr buffer, int length);

    private const int ORdonly = 0;
    private const int ODirectory = 0x10000;
    private const int OCloexec = 0x80000;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    /// <summary>
    /// fsync(2) of a directory, which makes the renames in it durable. .NET refuses to open a directory as
    /// a file, so this goes to libc. Returns 0 or the errno.
    /// </summary>
    public static int SyncDirectory(string path)
    {
        var fd = Open(path, ORdonly | ODirectory | OCloexec);
        if (fd < 0) return Marshal.GetLastPInvokeError();
        try { return Fsync(fd) == 0 ? 0 : Marshal.GetLastPInvokeError(); }
        finally { Close(fd); }
    }

    /// <summary>finit_module(2); returns 0 or the errno.</summary>
    public static int FinitModule(SafeHandle file, string parameters)
    {
        var result = SyscallFdStringInt(SysFinitModule, (int)file.DangerousGetHandle(), parameters, 0);
        return result == 0 ? 0 : Marshal.GetLastPInvokeError();
    }

    /// <summary>delete_module(2) without waiting; returns 0 or the errno.</summary>
    public static int DeleteModule(string name)
    {
        var result = SyscallStringInt(SysDeleteModule, name, ONonblock);
        return result == 0 ? 0 : Marshal.GetLastPInvokeError();
    }

    /// <summary>The whole kernel log buffer, as dmesg reads it.</summary>
    public static string ReadKernelLog()
    {
        var size = KlogCtlNoBuffer(SyslogActionSizeBuffer, IntPtr.Zero, 0);
        if (size <= 0) size = 1 << 20;
        var buffer = new byte[size];
        var read = KlogCtl(SyslogActionReadAll, buffer, buffer.Length);
        if (read < 0)
            throw new LivepatchException($"cannot read the kernel log: " +
                $"{Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}", ExitCode.Environment);
        return System.Text.Encoding.UTF8.GetString(buffer, 0, read);
    }

    public static string ErrnoMessage(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
