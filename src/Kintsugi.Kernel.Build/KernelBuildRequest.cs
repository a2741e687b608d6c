using System.Text.Json.Serialization;
using Kintsugi.Diff;
using Kintsugi.Kernel.Build.Livepatch;

namespace Kintsugi.Kernel.Build;

/// <summary>Which kernel to build for: a Debian release from the archive, or a generic target directory.</summary>
public abstract record TargetReference
{
    public sealed record Debian(KernelRelease Release) : TargetReference
    {
        public override string ToString() => Release.Value;
    }

    public sealed record TargetDirectory(string Path) : TargetReference
    {
        public override string ToString() => Path;
    }
}

/// <summary>What to build: fixes for one exact kernel, optionally on top of an earlier level.</summary>
/// <param name="BaseDirectory">The output directory of the previous level; its patches are carried forward.</param>
/// <param name="MaxUnits">A header fix rebuilding more units than this is refused with the list.</param>
/// <param name="Signing">The operator's key: the module is signed in the kernel's module signature format.</param>
/// <param name="CarryBasePatches">
/// False when the new patches supersede the base's instead of adding to them (a catch-up to a newer version
/// carries the whole difference from the running kernel's source again): the level and name still follow the base.
/// </param>
/// <param name="PrecompiledAfter">
/// After objects already compiled with these fixes for some units (catch-up's trials): those units are not compiled
/// again.
/// </param>
/// <param name="ContextPatchFiles">
/// Changes applied with the fixes that select no unit of their own: additions to headers that some fixes use (a
/// catch-up's companion headers). Only the units of the fixes see them; they are kept in the manifest as context.
/// </param>
public sealed record KernelBuildRequest(
    TargetReference Target,
    IReadOnlyList<string> PatchFiles,
    string? Name,
    IReadOnlyList<string> Cves,
    string? BaseDirectory,
    string OutputDirectory,
    bool SkipFidelity = false,
    int MaxUnits = 40,
    ModuleSigningKey? Signing = null,
    bool CarryBasePatches = true,
    string? PrecompiledAfter = null,
    IReadOnlyList<string>? ContextPatchFiles = null);

[JsonConverter(typeof(JsonStringEnumConverter<BuildOutcome>))]
public enum BuildOutcome { Built, NothingToDo }

public sealed record StageTiming(string Stage, double Seconds);

public sealed record KernelBuildResult(
    BuildOutcome Outcome,
    string? Module,
    string? ManifestPath,
    BuildManifest? Manifest,
    string Message,
    IReadOnlyList<StageTiming> Stages);

/// <summary>The fix cannot be live patched as written; the message lists every reason and what to do.</summary>
/// <param name="rules">
/// The differ's rules behind the refusal, when the differ refused it (empty for a refusal from the fix's files
/// or scope).
/// </param>
public sealed class LivepatchRefusedException(string message, IReadOnlyList<RefusalRule>? rules = null,
    Exception? inner = null, string? missingSymbol = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.InputRefused;

    public IReadOnlyList<RefusalRule> Rules { get; } = rules ?? [];

    /// <summary>A symbol the fixed code references that the running kernel does not have: a patch that also holds the
    /// fix adding it can build (catch-up groups them).</summary>
    public string? MissingSymbol { get; } = missingSymbol;
}
