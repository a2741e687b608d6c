using System.Diagnostics;

namespace Kintsugi.Kernel;

/// <summary>How a load ended.</summary>
public sealed record
    LoadOutcome(ModuleName Name, TimeSpan TransitionTime, bool Forced, IReadOnlyList<ModuleName> Replaced);

/// <summary>
/// Loads, transitions and removes livepatch modules through the kernel's own interface
/// (finit_module, /sys/kernel/livepatch, delete_module).
/// </summary>
public sealed class LivepatchRuntime(Action<string>? report = null)
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(50);
    private readonly Action<string> _report = report ?? (_ => { });

    /// <summary>Checks that a module can be loaded here, without loading it.</summary>
    public static void CheckLoadable(ModuleFile module)
    {
        if (!module.IsLivepatch)
            throw new LivepatchException($"{module.Path} is a kernel module but not a livepatch (its .modinfo has no " +
                $"livepatch=Y); refusing to load it", ExitCode.InputRefused);
        var running = RunningKernel.Release;
        if (module.VermagicRelease != running.Value)
            throw new LivepatchException(
                $"{module.Path} was built for kernel {module.VermagicRelease ?? "(no vermagic)"}, but this machine " +
                $"runs {running}; build it for {running}",
                ExitCode.InputRefused);
        if (!RunningKernel.SupportsLivepatch)
            throw new LivepatchException($"this kernel has no {LivepatchSysfs.Root}: it was built without " +
                $"CONFIG_LIVEPATCH", ExitCode.Environment);
        if (RunningKernel.IsModuleLoaded(module.Name))
            throw new LivepatchException($"a module named {module.Name} is already loaded; unload it first (kintsugi " +
                $"kernel unload {module.Name})", ExitCode.InputRefused);
    }

    /// <summary>
    /// Loads a livepatch and waits for its transition. A transition still running after
    /// <paramref name="timeout"/> is reversed and the module removed, unless <paramref name="force"/>.
    /// </summary>
    /// <param name="effectiveUname">Show the effective version in uname while applied (null: as the machine opted
    /// in).</param>
    /// <param name="effectivePackageVersion">The version the patch makes this kernel equivalent to (the bundle's), else
    /// the module's own.</param>
    public LoadOutcome Load(ModuleFile module, TimeSpan timeout, bool force = false, bool? effectiveUname = null,
        string? effectivePackageVersion = null)
    {
        CheckLoadable(module);
        var parameters = EffectiveUname.Parameters(module,
            effectiveUname ?? EffectiveUname.Enabled(MachinePaths.Default), effectivePackageVersion);
        var before = LivepatchSysfs.List().Where(p => p.Enabled).Select(p => p.Name).ToList();
        _report($"loading {module.Name} from {module.Path}");
        // Timed from the load: on 6.12 finit_module itself waits for much of the transition.
        var clock = Stopwatch.StartNew();
        using (var handle = File.OpenHandle(module.Path))
        {
            var errno = Native.FinitModule(handle, parameters);
            if (errno != 0) throw LoadError(module, errno);
        }

        if (LivepatchSysfs.TryRead(module.Name) is null)
        {
            // A livepatch module registers itself from its init function; without a sysfs entry it did not.
            TryDeleteModule(module.Name);
            throw new LivepatchException($"{module.Name} loaded but did not register a livepatch (see the kernel " +
                $"log: dmesg | tail); it was removed", ExitCode.InputRefused);
        }

        _report($"waiting for the patching transition of {module.Name} (timeout {timeout.TotalSeconds:0} s)");
        var forced = false;
        if (!WaitForTransition(module.Name, timeout))
        {
            var blocking = BlockingTask.Find(targetState: 1);
            if (!force)
            {
                var reverted = Revert(module.Name, timeout);
                throw new LivepatchException(StallMessage(module.Name, timeout, blocking, reverted),
                    ExitCode.TransitionFailed);
            }
            _report($"warning: forcing the transition of {module.Name}: {blocking.Count} task(s) never switched and " +
                $"may still run the old code next to the new; the consistency model no longer holds for this patch");
            File.WriteAllText(Path.Combine(LivepatchSysfs.PatchDirectory(module.Name), "force"), "1");
            forced = true;
            // The kernel completes a forced transition at its next retry, about a second later.
            if (!WaitForTransition(module.Name, TimeSpan.FromSeconds(Math.Max(30, timeout.TotalSeconds))))
                throw new LivepatchException($"the transition of {module.Name} did not complete even when forced",
                    ExitCode.TransitionFailed);
        }

        // An atomic replace disables the old patches when the transition completes; the kernel frees them
        // (and their sysfs entries) a moment later.
        var replaced =
            before.Where(n => n != module.Name && LivepatchSysfs.TryRead(n) is not { Enabled: true }).ToList();
        _report($"{module.Name} applied in {clock.Elapsed.TotalSeconds:0.00} s" +
                (replaced.Count > 0 ? $", replacing {string.Join(", ", replaced)}" : ""));
        foreach (var old in replaced)
            if (DeleteModuleWithRetry(old, timeout) == 0) _report($"removed replaced module {old}");
        return new LoadOutcome(module.Name, clock.Elapsed, forced, replaced);
    }

    /// <summary>Disables a livepatch (waiting for the unpatching transition) and removes its module.</summary>
    public void Unload(ModuleName name, TimeSpan timeout)
    {
        var patch = LivepatchSysfs.TryRead(name);
        if (patch is null && !RunningKernel.IsModuleLoaded(name))
            throw new LivepatchException($"no livepatch named {name} is loaded (see kintsugi kernel list)",
                ExitCode.NotFound);
        if (patch is { Enabled: true })
        {
            if (patch.InTransition)
                throw new LivepatchException($"{name} is still in transition; wait for it to finish, then unload",
                    ExitCode.TransitionFailed);
            _report($"disabling {name}");
            File.WriteAllText(Path.Combine(LivepatchSysfs.PatchDirectory(name), "enabled"), "0");
            if (!WaitForTransition(name, timeout))
            {
                var blocking = BlockingTask.Find(targetState: 0);
                var reverted = Revert(name, timeout);
                throw new LivepatchException(
                    $"the unpatching transition of {name} did not complete within {timeout.TotalSeconds:0} s; " +
                    (reverted ? "it was reversed and the patch stays applied"
                    : "reversing it did not complete either") +
                    BlockingList(blocking), ExitCode.TransitionFailed);
            }
        }
        // The kernel removes the sysfs entry once a disabled patch is freed; only then can the module go.
        WaitUntil(() => LivepatchSysfs.TryRead(name) is null, timeout);
        var errno = DeleteModuleWithRetry(name, timeout);
        if (errno != 0)
            throw new LivepatchException($"the kernel refused to remove module {name}: {Native.ErrnoMessage(errno)}" +
                (errno is 11 or 16 ? " (it is still in use)" : ""), ExitCode.TransitionFailed);
        _report($"{name} unloaded");
    }

    private bool Revert(ModuleName name, TimeSpan stalledAfter)
    {
        // Reversing is the way back to safety: give it longer than the transition that stalled (the kernel
        // retries switching tasks about once a second, so even an easy reversal takes a few seconds).
        var timeout = TimeSpan.FromSeconds(Math.Max(30, stalledAfter.TotalSeconds));
        _report($"reversing the transition of {name}");
        try { File.WriteAllText(Path.Combine(LivepatchSysfs.PatchDirectory(name), "enabled"), "0"); }
        catch (IOException e) { _report($"could not reverse the transition: {e.Message}"); return false; }
        if (!WaitForTransition(name, timeout)) return false;
        WaitUntil(() => LivepatchSysfs.TryRead(name) is null, timeout);
        return DeleteModuleWithRetry(name, timeout) == 0;
    }

    private static bool WaitForTransition(ModuleName name, TimeSpan timeout) =>
        WaitUntil(() => LivepatchSysfs.TryRead(name) is not { InTransition: true }, timeout);

    private static bool WaitUntil(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout) return false;
            Thread.Sleep(PollInterval);
        }
        return true;
    }

    private static int DeleteModuleWithRetry(ModuleName name, TimeSpan timeout)
    {
        var errno = 0;
        // Right after a transition the module can still be briefly referenced; EAGAIN/EBUSY settle quickly.
        WaitUntil(() => (errno = Native.DeleteModule(name.Value)) is not (11 /* EAGAIN */ or 16 /* EBUSY */),
            TimeSpan.FromSeconds(Math.Min(5, timeout.TotalSeconds)));
        return errno == 2 /* ENOENT: already gone */ ? 0 : errno;
    }

    private static int TryDeleteModule(ModuleName name) => Native.DeleteModule(name.Value);

    private static LivepatchException LoadError(ModuleFile module, int errno)
    {
        var reason = errno switch
        {
            17 => "a module with that name is already loaded",
            8 => "the kernel rejected its format (built for another kernel build or configuration; see dmesg)",
            1 => "operation not permitted (run as root; with lockdown or Secure Boot the module must be signed with " +
            "a trusted key)",
            129 => "its signature was rejected (the kernel requires modules signed with a trusted key)",
            _ => Native.ErrnoMessage(errno),
        };
        var code = errno is 1 ? ExitCode.Environment : ExitCode.InputRefused;
        return new LivepatchException($"the kernel refused to load {module.Path}: {reason}", code);
    }

    private static string
        StallMessage(ModuleName name, TimeSpan timeout, IReadOnlyList<BlockingTask> blocking, bool reverted) =>
        $"the patching transition of {name} did not complete within {timeout.TotalSeconds:0} s; " +
        (reverted ? "it was reversed and the module removed, so the system is as before"
        : "reversing it did not complete; check kintsugi kernel list") +
        BlockingList(blocking) +
        "\nRetry when the blocking tasks are idle, or patch different functions; --force completes the transition " +
        "regardless, at the price of the consistency guarantee.";

    private static string BlockingList(IReadOnlyList<BlockingTask> blocking) =>
        blocking.Count == 0 ? ""
        : $"\n  {blocking.Count} task(s) had not switched:\n    " + string.Join("\n    ", blocking);
}
