using System.Text;

namespace Kintsugi.Kernel;

/// <summary>One patch as status reports it: what the kernel says, plus what Kintsugi knows of it.</summary>
public sealed record PatchStatus(string Name, bool Loaded, bool Enabled, bool InTransition, string? BootState,
    string? Sha256, string? EffectiveVersion, IReadOnlyList<PatchedObject> Objects,
    int? Level = null, string? Bundle = null, string? Problem = null);

/// <summary>
/// The livepatch state of this machine in the shared vocabulary, for people, scanners and the agent's
/// reports: the applied cumulative level, the CVEs it fixes and the effective kernel version are read from
/// what the kernel actually has enabled, matched to the installed record it was loaded from.
/// </summary>
public sealed record MachineStatus(
    string Release,
    string? BuildId,
    string KernelVersion,
    string EffectiveVersion,
    string State,
    string? DisabledBecause,
    string Taint,
    IReadOnlyList<PatchStatus> Patches,
    int? Level = null,
    string? Bundle = null,
    IReadOnlyList<FixedCve>? CvesFixed = null,
    IReadOnlyList<string>? Fixes = null,
    string? EffectivePackageVersion = null,
    ApplyAttempt? LastAttempt = null)
{
    public static MachineStatus Read(MachinePaths paths)
    {
        var release = RunningKernel.Release;
        var version = EffectiveUname.RealVersion;
        var disabled = KillSwitch.Reason(paths);
        var loaded = LivepatchSysfs.List();
        var store = new PatchStore(paths, release);
        var installed = store.List();
        var patches = new List<PatchStatus>();
        InstalledPatch? applied = null;
        string? appliedEffective = null;
        foreach (var patch in loaded)
        {
            var record = LoadedRecord.Read(paths, patch.Name);
            var install = installed.FirstOrDefault(i => i.Name == patch.Name.Value);
            // The record describes what is loaded only if the loaded file is the installed one.
            if (install is not null && record is not null && record.Sha256 != install.Sha256) install = null;
            var effective = install?.Origin?.EffectiveVersion ?? record?.EffectiveVersion;
            patches.Add(new PatchStatus(patch.Name.Value, true, patch.Enabled, patch.InTransition,
                install?.BootState.ToString().ToLowerInvariant(),
                record?.Sha256 ?? install?.Sha256, effective, patch.Objects, install?.Origin?.Level,
                install?.Origin?.Bundle, install?.Problem));
            if (patch.Enabled)
            {
                if (install?.Origin is not null) applied = install;
                if (effective is not null) appliedEffective = effective;
            }
        }
        foreach (var install in installed.Where(i => loaded.All(l => l.Name.Value != i.Name)))
            patches.Add(new PatchStatus(install.Name, false, false, false,
                install.BootState.ToString().ToLowerInvariant(), install.Sha256, null, [],
                install.Origin?.Level, install.Origin?.Bundle, install.Problem));

        var taint = RunningKernel.Taint;
        var attempt = store.LastAttempt;
        var enabled = loaded.Any(p => p.Enabled);
        var state = !RunningKernel.SupportsLivepatch ? PatchState.KernelUnsupported
            : loaded.Any(p => p.InTransition)
            || installed.Any(i => i.PendingInThisBoot && loaded.Any(l => l.Name.Value == i.Name)) ? PatchState.Applying
            : enabled && (taint.ProblemsAddedSince(new Taint(0)).Count > 0 || applied?.Problem is not null)
            ? PatchState.AppliedWithBug
            // A failed attempt counts unless the running patch was installed after it (an older failure is history).
            : attempt is { Outcome: "apply-failed" } && (applied is null || (attempt.Bundle != applied.Origin?.Bundle
                && attempt.At > applied.InstalledAt)) ? PatchState.ApplyFailed
            : enabled ? PatchState.Applied
            : attempt is { Outcome: "revoked" } ? PatchState.Revoked
            : disabled is not null ? PatchState.Disabled
            : PatchState.NothingToApply;

        return new MachineStatus(release.Value, RunningKernel.BuildId?.ToString(), version,
            EffectiveVersionString(version, appliedEffective), state.ToWire(), disabled, taint.ToString(), patches,
            applied?.Origin?.Level, applied?.Origin?.Bundle, applied?.Origin?.Cves ?? [], applied?.Origin?.Fixes ?? [],
            appliedEffective, attempt);
    }

    /// <summary>
    /// Debian's version string names the package version ("... Debian 6.1.192-2 (2026-...)"); the effective
    /// string names the version the applied patches make this kernel equivalent to. The kernel keeps
    /// <see cref="KernelVersionLength"/> bytes of it (<c>uname -v</c>): a longer one drops what follows the package
    /// version (the build date, which scanners do not read) rather than be cut inside it.
    /// </summary>
    public static string EffectiveVersionString(string version, string? effectivePackageVersion)
    {
        if (effectivePackageVersion is null) return version;
        var marker = version.IndexOf("Debian ", StringComparison.Ordinal);
        if (marker < 0) return $"{version} (livepatched to {effectivePackageVersion})";
        var start = marker + "Debian ".Length;
        var end = version.IndexOf(' ', start);
        var full = version[..start] + effectivePackageVersion + (end < 0 ? "" : version[end..]);
        return Encoding.UTF8.GetByteCount(full) <= KernelVersionLength ? full
            : version[..start] + effectivePackageVersion;
    }

    /// <summary>The bytes the kernel's version string holds (<c>__NEW_UTS_LEN</c>; the field is 65 with its
    /// NUL).</summary>
    public const int KernelVersionLength = 64;
}
