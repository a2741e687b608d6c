namespace Kintsugi.Kernel;

/// <summary>What one boot-time application did with each installed patch.</summary>
public sealed record BootResult(string? DisabledBecause, IReadOnlyList<BootAction> Actions);

public sealed record BootAction(string Patch, string Action, string Detail);

/// <summary>
/// Re-applies installed patches at boot, guarding against crash loops: a patch is marked pending before
/// its load and confirmed only after it has run for the settle period without kernel problems. A patch
/// found still pending at the next boot was followed by a crash or reboot, and is quarantined instead of
/// being loaded again. Runs once per boot (the boot service or the agent, whichever comes first, under the
/// machine lock); it first finishes or undoes an apply that a crash interrupted (<see
/// cref="PatchStore.RecoverInterruptedApply"/>).
/// </summary>
public sealed class BootApplier(MachinePaths paths, LivepatchRuntime runtime, Action<string> report)
{
    /// <summary>Written under /run when this boot's re-application is done (gone at the next boot).</summary>
    public static string DoneMarker(MachinePaths paths) => Path.Combine(paths.Runtime, "boot-applied");

    /// <param name="refuse">
    /// Why an installed patch must never be loaded again, or null (the agent passes its trust store's verdict: a
    /// patch whose publisher key is retired). A refused patch is uninstalled, not loaded; the runtime itself
    /// knows nothing of keys.
    /// </param>
    public BootResult Run(TimeSpan settle, TimeSpan transitionTimeout, Func<InstalledPatch, string?>? refuse = null)
    {
        if (KillSwitch.Reason(paths) is { } reason)
        {
            report($"automatic patching is disabled: {reason}; nothing loaded");
            return new BootResult(reason, []);
        }
        using var machineLock =
            MachineLock.Acquire(paths, settle + transitionTimeout + TimeSpan.FromMinutes(5), report);
        if (File.Exists(DoneMarker(paths)))
        {
            report("installed patches were already re-applied in this boot");
            return new BootResult(null, []);
        }
        var result = Apply(settle, transitionTimeout, refuse);
        AtomicFile.WriteText(DoneMarker(paths), DateTimeOffset.UtcNow.ToString("O") + "\n");
        return result;
    }

    private BootResult Apply(TimeSpan settle, TimeSpan transitionTimeout, Func<InstalledPatch, string?>? refuse)
    {
        var store = new PatchStore(paths, RunningKernel.Release);
        var actions = new List<BootAction>();
        foreach (var change in store.RecoverInterruptedApply())
        {
            report(change);
            actions.Add(new("-", "recovered", change));
        }
        var loaded = new List<InstalledPatch>();
        var baseline = HealthBaseline.Now();
        foreach (var listed in store.List())
        {
            var patch = listed;
            if (patch.BootState != BootState.Staged && refuse?.Invoke(patch) is { } refused)
            {
                // Uninstalled first, so that no later boot loads it; then out of the kernel if an earlier start loaded
                // it.
                store.Uninstall(patch.ModuleName);
                var detail = refused;
                try
                {
                    if (LivepatchSysfs.TryRead(patch.ModuleName) is not null)
                    {
                        runtime.Unload(patch.ModuleName, transitionTimeout);
                        LoadedRecord.Remove(paths, patch.ModuleName);
                        detail += "; unloaded";
                    }
                }
                catch (KintsugiException e) { detail += $"; unloading it failed: {e.Message}"; }
                report($"not loading {patch.Name}: {detail}; uninstalled");
                actions.Add(new(patch.Name, "refused", detail));
                continue;
            }
            switch (patch.BootState)
            {
                case BootState.Pending when patch.PendingInThisBoot:
                    // Loaded earlier in this very boot by an apply that is still settling (or whose process was
                    // killed): not followed by a crash; the agent confirms or reverts it.
                    actions.Add(new(patch.Name, "already-loaded", "pending confirmation in this boot"));
                    continue;
                case BootState.Staged:
                    continue;
                case BootState.Pending when patch.ConfirmedBefore
                    && patch.UnconfirmedBoots + 1 < InstalledPatch.UnconfirmedBootsBeforeQuarantine:
                    // It ran healthy before: one boot that ended during the settle period is as likely a power
                    // loss as a crash it caused. Load it again, counting; a crash loop still ends in quarantine.
                    patch = patch with { UnconfirmedBoots = patch.UnconfirmedBoots + 1 };
                    report($"{patch.Name}: its load at {patch.LastLoadAt:u} was not confirmed (a crash, a reset or a " +
                        $"power loss); it ran healthy before, so it is loaded again " +
                           $"(unconfirmed boot {patch.UnconfirmedBoots} of " +
                           $"{InstalledPatch.UnconfirmedBootsBeforeQuarantine - 1} allowed)");
                    actions.Add(new(patch.Name, "unconfirmed", $"unconfirmed boot {patch.UnconfirmedBoots}"));
                    break;
                case BootState.Pending:
                    var boots = patch.UnconfirmedBoots + 1;
                    var note = boots == 1
                        ? $"its load at {patch.LastLoadAt:u} was followed by a crash or reboot before it was " +
                        $"confirmed healthy"
                        : $"{boots} boots in a row ended before it was confirmed healthy (the last load at " +
                        $"{patch.LastLoadAt:u})";
                    store.Save(patch with { BootState = BootState.Quarantined, Note = note, UnconfirmedBoots = boots });
                    report($"not loading {patch.Name}: {note}; quarantined (investigate, then `kintsugi kernel retry " +
                        $"{patch.Name}`)");
                    actions.Add(new(patch.Name, "quarantined", note));
                    continue;
                case BootState.Quarantined:
                    report($"not loading {patch.Name}: quarantined ({patch.Note})");
                    actions.Add(new(patch.Name, "skipped", patch.Note ?? "quarantined"));
                    continue;
            }
            if (RunningKernel.IsModuleLoaded(patch.ModuleName))
            {
                actions.Add(new(patch.Name, "already-loaded", ""));
                continue;
            }
            // A record confirmed healthy before this field existed counts as confirmed before.
            var pending = patch with
            {
                BootState = BootState.Pending,
                LastLoadAt = DateTimeOffset.UtcNow,
                BootId = RunningKernel.BootId,
                ConfirmedBefore = patch.ConfirmedBefore || patch.BootState == BootState.Healthy
            };
            store.Save(pending);
            try
            {
                var module = ModuleFile.Read(store.ModulePath(patch.ModuleName));
                if (module.Sha256 != patch.Sha256)
                    throw new LivepatchException($"{module.Path} changed since it was installed (sha256 mismatch); " +
                        $"install it again", ExitCode.InputRefused);
                runtime.Load(module, transitionTimeout, effectiveUname: patch.EffectiveUname,
                    effectivePackageVersion: patch.Origin?.EffectiveVersion);
                LoadedRecord.Write(paths, module);
                loaded.Add(pending);
                actions.Add(new(patch.Name, "loaded", ""));
            }
            catch (KintsugiException e)
            {
                // A clean failure is not a crash: the patch stays installed and is tried again next boot.
                store.Save(patch with { Note = "boot load failed: " + e.Message });
                report($"loading {patch.Name} failed: {e.Message}");
                actions.Add(new(patch.Name, "failed", e.Message));
            }
        }
        if (loaded.Count == 0) return new BootResult(null, actions);

        report($"loaded {loaded.Count} patch(es); confirming health after {settle.TotalSeconds:0} s");
        Thread.Sleep(settle);
        var health = baseline.Check();
        foreach (var patch in loaded)
        {
            var confirmed = health.Healthy
                ? patch
                with
                { BootState = BootState.Healthy, Note = null, UnconfirmedBoots = 0, ConfirmedBefore = true }
                : patch with { BootState = BootState.Quarantined, Note = "kernel problems after load: " + health };
            store.Save(confirmed);
            actions.Add(new(patch.Name, health.Healthy ? "confirmed" : "quarantined", health.ToString()));
        }
        report(health.Healthy ? "all loaded patches confirmed healthy"
            : $"kernel problems after load, patches quarantined: {health}");
        return new BootResult(null, actions);
    }
}
