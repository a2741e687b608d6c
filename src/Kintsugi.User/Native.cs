using System.Runtime.InteropServices;

namespace Kintsugi.User;

/// <summary>x86-64 <c>struct user_regs_struct</c>, as PTRACE_GETREGS fills it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct UserRegisters
{
    public ulong R15, R14, R13, R12, Rbp, Rbx, R11, R10, R9, R8, Rax, Rcx, Rdx, Rsi, Rdi, OrigRax;
    public ulong Rip, Cs, Eflags, Rsp, Ss, FsBase, GsBase, Ds, Es, Fs, Gs;
}

/// <summary>The system calls the applier needs that .NET does not wrap: ptrace, waitpid, pread/pwrite.</summary>
internal static unsafe partial class Native
{
    public const int PtracePeekData = 2;
    public const int PtracePokeData = 5;
    public const int PtraceSingleStep = 9;
    public const int PtraceGetRegs = 12;
    public const int PtraceSetRegs = 13;
    public const int PtraceDetach = 17;
    public const int PtraceSeize = 0x4206;
    public const int PtraceInterrupt = 0x4207;

    public const int WNoHang = 1;
    public const int WAll = 0x40000000;

    public const int Esrch = 3;
    public const int Eintr = 4;
    public const int Echild = 10;

    public const int SigTrap = 5;
    public const int SigStop = 19;

    [LibraryImport("libc", EntryPoint = "ptrace", SetLastError = true)]
    private static partial long PtraceRaw(long request, int pid, nint address, nint data);

    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    private static partial int WaitPidRaw(int pid, int* status, int options);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenRaw(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close")]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    private static partial nint PreadRaw(int fd, byte* buffer, nint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    private static partial nint PwriteRaw(int fd, byte* buffer, nint count, long offset);

    /// <summary>ptrace(2); returns the result, or -1 with the errno in <paramref name="errno"/>.</summary>
    public static long Ptrace(int request, int pid, nint address, nint data, out int errno)
    {
        Marshal.SetLastPInvokeError(0);
        var result = PtraceRaw(request, pid, address, data);
        errno = result == -1 ? Marshal.GetLastPInvokeError() : 0;
        return result;
    }

    public static int GetRegisters(int tid, out UserRegisters registers)
    {
        fixed (UserRegisters* pointer = &registers)
            return Ptrace(PtraceGetRegs, tid, 0, (nint)pointer, out var errno) == -1 ? errno : 0;
    }

    public static int SetRegisters(int tid, in UserRegisters registers)
    {
        fixed (UserRegisters* pointer = &registers)
            return Ptrace(PtraceSetRegs, tid, 0, (nint)pointer, out var errno) == -1 ? errno : 0;
    }

    /// <summary>waitpid(2), retried on EINTR; returns the pid (0 with WNOHANG and nothing to report) or
    /// -errno.</summary>
    public static int WaitPid(int pid, out int status, int options)
    {
        int raw;
        while (true)
        {
            int result;
            result = WaitPidRaw(pid, &raw, options);
            if (result >= 0) { status = raw; return result; }
            var errno = Marshal.GetLastPInvokeError();
            if (errno != Eintr) { status = 0; return -errno; }
        }
    }

    public static int Open(string path, int flags, out int errno)
    {
        var fd = OpenRaw(path, flags);
        errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        return fd;
    }

    /// <summary>pread(2) until the buffer is full or the read stops short; returns the bytes read or -errno.</summary>
    public static long Pread(int fd, Span<byte> buffer, long offset)
    {
        fixed (byte* start = buffer) return Transfer(&PreadRaw, fd, start, buffer.Length, offset, keepPartial: true);
    }

    /// <summary>pwrite(2) until the whole buffer is written or the write stops short; returns the bytes written or
    /// -errno.</summary>
    public static long Pwrite(int fd, ReadOnlySpan<byte> buffer, long offset)
    {
        fixed (byte* start = buffer) return Transfer(&PwriteRaw, fd, start, buffer.Length, offset, keepPartial: false);
    }

    /// <summary>
    /// Repeats a positioned read or write, retried on EINTR, until <paramref name="length"/> bytes are moved or the
    /// call moves none. On an error: the bytes moved so far when <paramref name="keepPartial"/> (and some were), else
    /// -errno.
    /// </summary>
    private static long Transfer(delegate*<int, byte*, nint, long, nint> call, int fd, byte* start, int length,
        long offset, bool keepPartial)
    {
        long done = 0;
        while (done < length)
        {
            var n = call(fd, start + done, (nint)(length - done), offset + done);
            if (n < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == Eintr) continue;
                return keepPartial && done > 0 ? done : -errno;
            }
            if (n == 0) break;
            done += n;
        }
        return done;
    }

    public static string ErrnoMessage(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}

internal static partial class Native
{
    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall3(long number, long a, long b, long c);

    /// <summary>tgkill(2): queues a signal to one thread.</summary>
    public static void Tgkill(int pid, int tid, int signal) => Syscall3(234, pid, tid, signal);
}
