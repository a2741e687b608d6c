namespace Kintsugi;

/// <summary>
/// Base of every failure Kintsugi reports to a user. Each failure domain has its own subtype; the message
/// says what went wrong and what to do about it, and <see cref="ExitCode"/> is what the command exits with.
/// </summary>
public abstract class KintsugiException : Exception
{
    protected KintsugiException(string message, Exception? inner = null) : base(message, inner) { }

    public abstract ExitCode ExitCode { get; }
}

/// <summary>The documented exit codes of the <c>kintsugi</c> command.</summary>
public enum ExitCode
{
    Success = 0,
    /// <summary>An unexpected internal error (a bug); run with --verbose and report it.</summary>
    InternalError = 1,
    /// <summary>The command line was not understood.</summary>
    Usage = 2,
    /// <summary>An input was refused (not a module, not a livepatch, built for another kernel, malformed
    /// file).</summary>
    InputRefused = 3,
    /// <summary>A livepatch transition did not complete; it was reverted (or forced, with --force).</summary>
    TransitionFailed = 4,
    /// <summary>The environment lacks something: not root, no livepatch support, a tool missing.</summary>
    Environment = 5,
    /// <summary>Something named was not found: a kernel in the archive, a loaded patch, a package.</summary>
    NotFound = 6,
    /// <summary>A kill switch is set: nothing was applied.</summary>
    Disabled = 7,
    /// <summary>kernel test: the module did not prove itself (a step, the kernel log or the taint failed).</summary>
    TestFailed = 8,
    /// <summary>kernel build: the fix changes no machine code of the target (for example only __LINE__ values moved);
    /// no module was written.</summary>
    NothingToDo = 9,
    /// <summary>kernel catch-up: a module was built, but some changed files were refused or some CVEs still need a
    /// reboot (see the report).</summary>
    CatchUpIncomplete = 10,
    /// <summary>agent check: a newer release for this kernel is offered, or the applied one was revoked: the machine is
    /// not up to date.</summary>
    OutOfDate = 11,
    /// <summary>lab run: the guest did not finish within --timeout.</summary>
    LabTimeout = 124,
    /// <summary>lab run: the lab itself failed (QEMU, initramfs, boot) before the guest command could report.</summary>
    LabFailure = 125,
    /// <summary>kernel build, kernel catch-up: stopped by SIGINT or SIGTERM (the shell's 128 + SIGINT); what finished
    /// is kept and the same command goes on from there.</summary>
    Interrupted = 130,
}
