using System.Diagnostics;

namespace Kintsugi.Kernel;

/// <summary>What to do when the kernel reports problems (taint, oops, BUG, WARNING) after a patch load.</summary>
public enum BugPolicy
{
    /// <summary>Keep the patch loaded; the state is <c>applied-with-bug</c>.</summary>
    Keep,
    /// <summary>Go back to the previous level (or to no patch), and never apply this one automatically again.</summary>
    Revert,
}

/// <summary>
/// The steps of one apply, in order. Each is durable before the next begins, and the test hook
/// <see cref="FaultInjection"/> can kill the process right after any of them.
/// </summary>
public enum ApplyStep
{
    /// <summary>The agent has the verified module on disk; the store is unchanged.</summary>
    Fetched,
    /// <summary>The module and its record (state staged) are in the store; boot never loads a staged patch.</summary>
    Staged,
    /// <summary>The record says pending (with this boot's id): a crash from here on quarantines the patch.</summary>
    Pending,
    /// <summary>The kernel finished the transition (atomic replace: the previous patch is disabled and
    /// removed).</summary>
    Loaded,
    /// <summary>The settle period passed and the kernel's health was checked.</summary>
    Checked,
    /// <summary>The record says healthy (or, after problems under the revert policy, quarantined).</summary>
    Confirmed,
    /// <summary>The replaced patches are removed from the store (or, under revert, the previous level is
    /// back).</summary>
    Committed,
}

/// <summary>
/// A test hook, documented in docs/cli.md: when <c>KINTSUGI_TEST_KILL_AFTER</c> names a step
/// (<c>fetched</c>, <c>staged</c>, <c>pending</c>, <c>loaded</c>, <c>checked</c>, <c>confirmed</c>,
/// <c>committed</c>), the process kills itself with SIGKILL right after that step, as a crash or an
/// operator's kill -9 would. Used by the lab tests that prove every interruption leaves a known state.
/// </summary>
public static class FaultInjection
{
    public const string EnvironmentVariable = "KINTSUGI_TEST_KILL_AFTER";

    public static string WireName(this ApplyStep step) => step.ToString().ToLowerInvariant();

    public static void After(ApplyStep step)
    {
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) != step.WireName()) return;
        Console.Error.WriteLine($"kintsugi: test hook: killing this process after step {step.WireName()}");
        Console.Error.Flush();
        Process.GetCurrentProcess().Kill();
        Thread.Sleep(Timeout.Infinite);
    }
}

/// <summary>How an apply ended.</summary>
/// <param name="State">The shared state word: <c>applied</c> or <c>applied-with-bug</c>.</param>
/// <param name="Reverted">Under <see cref="BugPolicy.Revert"/>: the patch was taken back out.</param>
public sealed record ApplyOutcome(string State, ModuleName Name, HealthReport Health, bool Reverted, string Detail);

/// <summary>
/// Applies one cumulative livepatch as a crash-safe sequence of durable steps (<see cref="ApplyStep"/>):
/// stage in the store, mark pending, load with atomic replace, check the kernel's health after a settle
/// period, then confirm and remove the replaced patches, or quarantine and go back under
/// <see cref="BugPolicy.Revert"/>. The store's records are the journal: a crash before the load leaves a
/// staged record that is discarded; a crash after it leaves a pending one that the next boot quarantines
/// (the crash-loop guard of <see cref="BootApplier"/>); an interrupted commit is finished at the next start.
/// </summary>
public sealed class PatchApplier(MachinePaths paths, LivepatchRuntime runtime, Action<string> report)
{
    public PatchStore Store { get; } = new(paths, RunningKernel.Release);

    /// <param name="effectiveUname">
    /// Show the effective version in uname while applied, kept with the installed patch for its later loads; null:
    /// as the machine's switch file says at each load.
    /// </param>
    public ApplyOutcome
        Apply(ModuleFile module, PatchOrigin? origin, BugPolicy policy, TimeSpan settle, TimeSpan transitionTimeout,
        bool? effectiveUname = null)
    {
        using var machineLock =
            MachineLock.Acquire(paths, settle + transitionTimeout + TimeSpan.FromMinutes(5), report);
        LivepatchRuntime.CheckLoadable(module);
        var replaces = Store.List().Where(r =>
            r.BootState is BootState.Installed or BootState.Healthy or BootState.Pending && r.Name != module.Name.Value)
            .Select(r => r.Name).ToList();
        var staged = Store.Install(module, BootState.Staged, origin, replaces, effectiveUname);
        FaultInjection.After(ApplyStep.Staged);

        var pending = staged
            with
        { BootState = BootState.Pending, LastLoadAt = DateTimeOffset.UtcNow, BootId = RunningKernel.BootId };
        Store.Save(pending);
        FaultInjection.After(ApplyStep.Pending);

        var baseline = HealthBaseline.Now();
        var installed = ModuleFile.Read(Store.ModulePath(module.Name));
        try
        {
            runtime.Load(installed, transitionTimeout, effectiveUname: effectiveUname,
            effectivePackageVersion: origin?.EffectiveVersion);
        }
        catch (KintsugiException)
        {
            // A refused or reversed load leaves the kernel as it was: forget the staged copy.
            Store.Uninstall(module.Name);
            throw;
        }
        LoadedRecord.Write(paths, installed);
        FaultInjection.After(ApplyStep.Loaded);
        return Settle(pending, baseline, policy, settle, transitionTimeout);
    }

    /// <summary>
    /// At agent start (after boot re-application): finishes an apply interrupted in this boot. A patch
    /// still pending from this boot whose module is loaded resumes at its health check; one that is not
    /// loaded never finished loading and is discarded (the agent fetches it again). Returns the outcome
    /// of a resumed apply, or null when there was none.
    /// </summary>
    public ApplyOutcome? Resume(BugPolicy policy, TimeSpan settle, TimeSpan transitionTimeout)
    {
        using var machineLock =
            MachineLock.Acquire(paths, settle + transitionTimeout + TimeSpan.FromMinutes(5), report);
        foreach (var change in Store.RecoverInterruptedApply()) report(change);
        ApplyOutcome? outcome = null;
        // A revert interrupted after the quarantine: the quarantined patch may still run.
        foreach (var bad in Store.List().Where(r => r.BootState == BootState.Quarantined && r.Problem is not null
            && LivepatchSysfs.TryRead(r.ModuleName) is { Enabled: true }))
        {
            report($"finishing the revert of {bad.Name} interrupted in this boot");
            outcome = new ApplyOutcome(PatchState.AppliedWithBug.ToWire(), bad.ModuleName, new HealthReport([], []),
                true, GoBack(bad, transitionTimeout));
        }
        foreach (var pending in Store.List().Where(r => r.PendingInThisBoot))
        {
            var loaded = LivepatchSysfs.TryRead(pending.ModuleName);
            if (loaded is not { Enabled: true })
            {
                Store.Uninstall(pending.ModuleName);
                report($"discarded {pending.Name}: its apply in this boot was interrupted before the load completed");
                continue;
            }
            report($"resuming the apply of {pending.Name} interrupted in this boot: checking its health");
            WaitForTransition(pending.ModuleName, transitionTimeout);
            if (LoadedRecord.Read(paths, pending.ModuleName) is null)
                LoadedRecord.Write(paths, ModuleFile.Read(Store.ModulePath(pending.ModuleName)));
            // The baseline is the load time's: problems since then count.
            outcome = Settle(pending, HealthBaseline.Since(pending.LastLoadAt), policy, settle, transitionTimeout);
        }
        return outcome;
    }

    /// <summary>Takes every Kintsugi patch out: forgets the records first (so none is re-applied at boot), then
    /// unloads.</summary>
    public IReadOnlyList<string> RemoveAll(TimeSpan transitionTimeout) =>
        Remove(r => r.BootState != BootState.Quarantined, transitionTimeout, strays: true);

    /// <summary>
    /// Takes the installed patches <paramref name="which"/> selects out: records first, then the kernel. With
    /// <paramref name="strays"/>, also any livepatch Kintsugi loaded in this boot whose record is already gone.
    /// </summary>
    public IReadOnlyList<string>
        Remove(Func<InstalledPatch, bool> which, TimeSpan transitionTimeout, bool strays = false)
    {
        using var machineLock = MachineLock.Acquire(paths, transitionTimeout + TimeSpan.FromMinutes(5), report);
        var removed = new List<string>();
        var records = Store.List().Where(which).ToList();
        foreach (var record in records) Store.Uninstall(record.ModuleName);
        // Ours: what the store held, and what Kintsugi loaded in this boot (a removal interrupted after the records
        // went).
        foreach (var patch in LivepatchSysfs.List().Where(p =>
            records.Any(r => r.Name == p.Name.Value) || strays && LoadedRecord.Read(paths, p.Name) is not null))
        {
            runtime.Unload(patch.Name, transitionTimeout);
            LoadedRecord.Remove(paths, patch.Name);
            removed.Add(patch.Name.Value);
        }
        return removed;
    }

    private ApplyOutcome Settle(InstalledPatch pending, HealthBaseline baseline, BugPolicy policy, TimeSpan settle,
        TimeSpan transitionTimeout)
    {
        if (settle > TimeSpan.Zero)
        {
            report($"{pending.Name} loaded; checking the kernel's health for {settle.TotalSeconds:0} s");
            Thread.Sleep(settle);
        }
        var health = baseline.Check();
        FaultInjection.After(ApplyStep.Checked);

        if (health.Healthy || policy == BugPolicy.Keep)
        {
            var problem = health.Healthy ? null : "kernel problems after load: " + health;
            Store.Save(pending with
            {
                BootState = BootState.Healthy,
                Note = problem,
                Problem = problem,
                UnconfirmedBoots = 0,
                ConfirmedBefore = true
            });
            FaultInjection.After(ApplyStep.Confirmed);
            foreach (var change in Store.RecoverInterruptedApply()) report(change);
            FaultInjection.After(ApplyStep.Committed);
            if (!health.Healthy) report($"warning: {problem}; keeping {pending.Name} loaded (policy keep)");
            return new ApplyOutcome(health.Healthy ? PatchState.Applied.ToWire() : PatchState.AppliedWithBug.ToWire(),
                pending.ModuleName, health, false,
                health.Healthy ? $"{pending.Name} applied" : $"{pending.Name} applied; {problem}");
        }

        // Revert: quarantine first, so that a crash from here on never loads it again.
        var note = "kernel problems after load: " + health;
        var quarantined = pending with { BootState = BootState.Quarantined, Note = note, Problem = note };
        Store.Save(quarantined);
        FaultInjection.After(ApplyStep.Confirmed);
        var detail = GoBack(quarantined, transitionTimeout);
        FaultInjection.After(ApplyStep.Committed);
        return new ApplyOutcome(PatchState.AppliedWithBug.ToWire(), pending.ModuleName, health, true, detail);
    }

    /// <summary>Takes a quarantined patch out of the kernel: back to the level it replaced when that is still
    /// installed, otherwise no patch.</summary>
    private string GoBack(InstalledPatch quarantined, TimeSpan transitionTimeout)
    {
        var note = quarantined.Note ?? "quarantined";
        var previous = Store.List().LastOrDefault(r =>
            quarantined.Replaces?.Contains(r.Name) == true && r.BootState is BootState.Healthy or BootState.Installed);
        string detail;
        if (previous is not null)
        {
            report($"{note}; going back to {previous.Name} (policy revert)");
            var module = ModuleFile.Read(Store.ModulePath(previous.ModuleName));
            runtime.Load(module, transitionTimeout, effectiveUname: previous.EffectiveUname,
                effectivePackageVersion: previous.Origin?.EffectiveVersion);
            LoadedRecord.Write(paths, module);
            detail = $"{quarantined.Name} reverted to {previous.Name}: {note}";
        }
        else
        {
            report($"{note}; unloading {quarantined.Name} (policy revert)");
            runtime.Unload(quarantined.ModuleName, transitionTimeout);
            detail = $"{quarantined.Name} unloaded: {note}";
        }
        LoadedRecord.Remove(paths, quarantined.ModuleName);
        return detail;
    }

    private static void WaitForTransition(ModuleName name, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (LivepatchSysfs.TryRead(name) is { InTransition: true } && clock.Elapsed < timeout) Thread.Sleep(50);
    }
}
