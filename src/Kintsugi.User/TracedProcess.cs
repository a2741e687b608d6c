using System.Diagnostics;

namespace Kintsugi.User;

/// <summary>A thread of a traced process, stopped: its registers, and the signal its stop intercepted, if
/// any.</summary>
internal sealed class TracedThread(int tid)
{
    public int Tid { get; } = tid;
    public UserRegisters Registers;
    /// <summary>Signals dequeued while the thread was stopped; delivered again when it is let go.</summary>
    public List<int> InterceptedSignals { get; } = [];
}

/// <summary>
/// Every thread of a process stopped under ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT, so no SIGSTOP is sent and
/// none can be lost). Attaching repeats until /proc/PID/task has no thread left unstopped: a thread created
/// meanwhile was created by a thread that was still running, and every round stops more of them.
/// Ptrace belongs to the OS thread that attached: use an instance from one thread, between attach and dispose.
/// </summary>
internal sealed class TracedProcess : IDisposable
{
    private const int EventStop = 128;
    private readonly Dictionary<int, TracedThread> _threads = [];
    private bool _detached;

    private TracedProcess(int pid) => Pid = pid;

    public int Pid { get; }

    public IReadOnlyCollection<TracedThread> Threads => _threads.Values;

    public static TracedProcess Attach(int pid, TimeSpan stopTimeout)
    {
        var process = new TracedProcess(pid);
        try
        {
            process.StopAll(stopTimeout);
            return process;
        }
        catch
        {
            process.Dispose();
            throw;
        }
    }

    private void StopAll(TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        for (var round = 0; ; round++)
        {
            var fresh = Tasks().Where(t => !_threads.ContainsKey(t)).ToList();
            if (fresh.Count == 0) break;
            if (round > 1000) throw new UserPatchException($"process {Pid} keeps creating threads faster than they " +
                $"can be stopped", ExitCode.TransitionFailed);
            var seized = new List<int>();
            foreach (var tid in fresh)
            {
                if (Native.Ptrace(Native.PtraceSeize, tid, 0, 0, out var errno) == -1)
                {
                    if (errno == Native.Esrch) continue; // exited meanwhile
                    throw new UserPatchException($"cannot attach to thread {tid} of process {Pid}: " +
                    $"{Native.ErrnoMessage(errno)}" +
                        (errno == 1 ? " (is a debugger attached, or are you not root?)" : ""), ExitCode.Environment);
                }
                _threads[tid] = new TracedThread(tid);
                if (Native.Ptrace(Native.PtraceInterrupt, tid, 0, 0, out errno) == -1 && errno != Native.Esrch)
                    throw new UserPatchException($"cannot stop thread {tid}: {Native.ErrnoMessage(errno)}",
                        ExitCode.Environment);
                seized.Add(tid);
            }
            foreach (var tid in seized) WaitForStop(_threads[tid], timeout - deadline.Elapsed);
        }
        if (_threads.Count == 0) throw new UserPatchException($"process {Pid} exited", ExitCode.NotFound);
        foreach (var thread in _threads.Values)
        {
            var errno = Native.GetRegisters(thread.Tid, out thread.Registers);
            if (errno != 0) throw new UserPatchException($"cannot read the registers of thread {thread.Tid}: " +
                $"{Native.ErrnoMessage(errno)}", ExitCode.Environment);
        }
    }

    private IEnumerable<int> Tasks()
    {
        try
        {
            return Directory.EnumerateDirectories($"/proc/{Pid}/task").Select(d => int.Parse(Path.GetFileName(d)))
            .ToList();
        }
        catch (DirectoryNotFoundException) { return []; }
    }

    /// <summary>Waits for the thread's next stop. Returns the stop signal, or 0 when the thread exited (it is
    /// forgotten).</summary>
    private int WaitForStop(TracedThread thread, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var result = Native.WaitPid(thread.Tid, out var status, Native.WNoHang | Native.WAll);
            if (result == thread.Tid)
            {
                if ((status & 0xff) != 0x7f) { _threads.Remove(thread.Tid); return 0; } // exited or killed
                var signal = (status >> 8) & 0xff;
                var ptraceEvent = status >> 16;
                // A signal-delivery stop dequeued the signal: it must be delivered on release, or it is lost.
                if (ptraceEvent == 0 && signal != Native.SigTrap) thread.InterceptedSignals.Add(signal);
                return ptraceEvent == EventStop ? EventStop : signal;
            }
            if (result < 0)
            {
                if (-result == Native.Echild) { _threads.Remove(thread.Tid); return 0; }
                throw new UserPatchException($"waiting for thread {thread.Tid}: {Native.ErrnoMessage(-result)}",
                    ExitCode.Environment);
            }
            if (clock.Elapsed > timeout)
                throw new UserPatchException($"thread {thread.Tid} of process {Pid} did not stop within " +
                    $"{timeout.TotalMilliseconds:0} ms " +
                    "(uninterruptible sleep: waiting for I/O?); nothing was changed", ExitCode.TransitionFailed);
            if (clock.ElapsedTicks < Stopwatch.Frequency / 1000) Thread.Yield(); else Thread.Sleep(1);
        }
    }

    /// <summary>
    /// Runs one system call in a stopped thread: points it at an existing <c>syscall</c> instruction (no code
    /// is written), single-steps it, and restores every register. <c>orig_rax = -1</c> keeps the kernel from
    /// restarting the system call the thread was interrupted in; restoring the registers afterwards restarts it.
    /// </summary>
    public long Syscall(ulong syscallInstruction, long number, params ulong[] arguments)
    {
        var thread = _threads.GetValueOrDefault(Pid) ?? _threads.Values.First();
        var saved = thread.Registers;
        var call = saved;
        call.Rip = syscallInstruction;
        call.Rax = (ulong)number;
        call.OrigRax = ulong.MaxValue;
        var slots = new[] { (Action<ulong>)(v => call.Rdi = v), v => call.Rsi = v, v => call.Rdx = v, v => call.R10 = v,
            v => call.R8 = v, v => call.R9 = v };
        for (var i = 0; i < arguments.Length; i++) slots[i](arguments[i]);
        Check(Native.SetRegisters(thread.Tid, call), thread, "set the registers of");
        UserRegisters after;
        for (var steps = 0; ; steps++)
        {
            if (Native.Ptrace(Native.PtraceSingleStep, thread.Tid, 0, 0, out var errno) == -1)
                throw new UserPatchException($"cannot single-step thread {thread.Tid}: {Native.ErrnoMessage(errno)}",
                    ExitCode.Environment);
            if (WaitForStop(thread, TimeSpan.FromSeconds(5)) == 0)
                throw new UserPatchException($"thread {thread.Tid} exited during a system call Kintsugi ran in it",
                    ExitCode.TransitionFailed);
            Check(Native.GetRegisters(thread.Tid, out after), thread, "read the registers of");
            if (after.Rip == syscallInstruction + 2) break;
            if (steps > 16) throw new UserPatchException($"thread {thread.Tid} did not run the system call",
                ExitCode.TransitionFailed);
        }
        Check(Native.SetRegisters(thread.Tid, saved), thread, "restore the registers of");
        return (long)after.Rax;
    }

    /// <summary>
    /// Single-steps the threads whose instruction pointer is inside a range, the others staying stopped, until
    /// each is outside every range: a thread caught executing a short function leaves it in a few instructions.
    /// All of them step at once, so their waits for a CPU overlap. A thread still inside after
    /// <paramref name="maxSteps"/> (a loop) stays there, and the check that follows reports it busy.
    /// </summary>
    public void StepOutOf(IReadOnlyList<CodeRange> ranges, int maxSteps)
    {
        bool Inside(TracedThread t) => ranges.Any(r => r.Contains(t.Registers.Rip) && t.Registers.Rip != r.End);
        var inside = _threads.Values.Where(Inside).ToList();
        for (var step = 0; step < maxSteps && inside.Count > 0; step++)
        {
            foreach (var thread in inside)
                if (Native.Ptrace(Native.PtraceSingleStep, thread.Tid, 0, 0, out var errno) == -1)
                    throw new UserPatchException($"cannot single-step thread {thread.Tid}: " +
                        $"{Native.ErrnoMessage(errno)}", ExitCode.Environment);
            foreach (var thread in inside)
                if (WaitForStop(thread, TimeSpan.FromMilliseconds(500)) != 0)
                    Check(Native.GetRegisters(thread.Tid, out thread.Registers), thread, "read the registers of");
            inside = inside.Where(t => _threads.ContainsKey(t.Tid) && Inside(t)).ToList();
        }
    }

    private static void Check(int errno, TracedThread thread, string what)
    {
        if (errno != 0) throw new UserPatchException($"cannot {what} thread {thread.Tid}: {Native.ErrnoMessage(errno)}",
            ExitCode.Environment);
    }

    /// <summary>Lets every thread go, delivering the signals its stop intercepted.</summary>
    public void Dispose()
    {
        if (_detached) return;
        _detached = true;
        foreach (var thread in _threads.Values)
        {
            var first = thread.InterceptedSignals.Count > 0 ? thread.InterceptedSignals[0] : 0;
            foreach (var again in thread.InterceptedSignals.Skip(1)) Native.Tgkill(Pid, thread.Tid, again);
            Native.Ptrace(Native.PtraceDetach, thread.Tid, 0, first, out _);
        }
        _threads.Clear();
    }
}
