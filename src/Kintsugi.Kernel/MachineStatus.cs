namespace Kintsugi.Kernel;

/// <summary>One patch as status reports it: what the kernel says, plus what Kintsugi knows of it.</summary>
public sealed record PatchStatus(string Name, bool Loaded, bool Enabled, bool InTransition, string? BootState, string? Sha256, string? EffectiveVersion, IReadOnlyList<PatchedObject> Objects);

/// <summary>The livepatch state of this machine in the shared vocabulary.</summary>
public sealed record MachineStatus(
    string Release,
    string? BuildId,
    string KernelVersion,
    string EffectiveVersion,
    string State,
    string? DisabledBecause,
    string Taint,
    IReadOnlyList<PatchStatus> Patches)
{
    public static MachineStatus Read(MachinePaths paths)
    {
        var release = RunningKernel.Release;
        var version = RunningKernel.Version;
        var disabled = KillSwitch.Reason(paths);
        var loaded = LivepatchSysfs.List();
        var installed = new PatchStore(paths, release).List();
        var patches = new List<PatchStatus>();
        foreach (var patch in loaded)
        {
            var record = LoadedRecord.Read(paths, patch.Name);
            var install = installed.FirstOrDefault(i => i.Name == patch.Name.Value);
            patches.Add(new PatchStatus(patch.Name.Value, true, patch.Enabled, patch.InTransition, install?.BootState.ToString().ToLowerInvariant(),
                record?.Sha256 ?? install?.Sha256, record?.EffectiveVersion, patch.Objects));
        }
        foreach (var install in installed.Where(i => loaded.All(l => l.Name.Value != i.Name)))
            patches.Add(new PatchStatus(install.Name, false, false, false, install.BootState.ToString().ToLowerInvariant(), install.Sha256, null, []));

        var taint = RunningKernel.Taint;
        var state = !RunningKernel.SupportsLivepatch ? PatchState.KernelUnsupported
            : loaded.Any(p => p.InTransition) ? PatchState.Applying
            : loaded.Any(p => p.Enabled) && taint.ProblemsAddedSince(new Taint(0)).Count > 0 ? PatchState.AppliedWithBug
            : loaded.Any(p => p.Enabled) ? PatchState.Applied
            : disabled is not null ? PatchState.Disabled
            : PatchState.NothingToApply;

        // The newest enabled patch that declares an effective version names what this kernel now equals.
        var effective = patches.Where(p => p.Enabled && p.EffectiveVersion is not null).Select(p => p.EffectiveVersion).LastOrDefault();
        return new MachineStatus(release.Value, RunningKernel.BuildId?.ToString(), version,
            EffectiveVersionString(version, effective), state.ToWire(), disabled, taint.ToString(), patches);
    }

    /// <summary>
    /// Debian's version string names the package version ("... Debian 6.1.192-2 (2026-...)"); the effective
    /// string names the version the applied patches make this kernel equivalent to.
    /// </summary>
    public static string EffectiveVersionString(string version, string? effectivePackageVersion)
    {
        if (effectivePackageVersion is null) return version;
        var marker = version.IndexOf("Debian ", StringComparison.Ordinal);
        if (marker < 0) return $"{version} (livepatched to {effectivePackageVersion})";
        var start = marker + "Debian ".Length;
        var end = version.IndexOf(' ', start);
        return version[..start] + effectivePackageVersion + (end < 0 ? "" : version[end..]);
    }
}
