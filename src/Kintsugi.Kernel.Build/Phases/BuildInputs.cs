using Kintsugi.Kernel.Build.Livepatch;
using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.Build.Phases;

/// <summary>A fix and the cumulative level it entered the patch at.</summary>
/// <param name="Context">Applied with the fixes but selects no unit (see <see
/// cref="KernelBuildRequest.ContextPatchFiles"/>).</param>
public sealed record LeveledPatch(SourcePatch Patch, int Level, bool Context = false);

/// <summary>
/// The first phase: what the request asks for, read and checked before anything is downloaded. The fixes of
/// the base level are carried forward with their own levels; the new ones enter at <see cref="Level"/>.
/// </summary>
/// <param name="Base">The manifest of the level this one replaces, when <c>--base</c> was given.</param>
/// <param name="Name">The module's base name: a C identifier; the module is named <c>Name_Level</c>.</param>
/// <param name="Signer">Who will sign the module: the certificate is read here, so a bad key fails before
/// compiling.</param>
public sealed partial record BuildInputs(
    BuildManifest? Base,
    int Level,
    string Name,
    IReadOnlyList<LeveledPatch> Patches,
    IReadOnlyList<ScopedChange> Scope,
    IReadOnlyList<string> Cves,
    ManifestSigner? Signer)
{
    public string ModuleName => $"{Name}_{Level}";

    public static BuildInputs Read(KernelBuildRequest request)
    {
        var signer = request.Signing?.Describe();
        var (basis, carried) = request.BaseDirectory is { } directory ? ReadBase(directory) : (null, []);
        if (!request.CarryBasePatches) carried = [];
        var level = (basis?.Level ?? 0) + 1;
        var added = request.PatchFiles.Select(SourcePatch.Read).ToList();
        if (added.Count == 0) throw new SourcePatchException("no patch given: pass at least one --patch");
        // A context change that is also a fix is applied once, as the fix.
        var context = (request.ContextPatchFiles ?? []).Select(SourcePatch.Read)
            .Where(c => added.All(a => a.Sha256 != c.Sha256) && carried.All(a => a.Patch.Sha256 != c.Sha256)).ToList();
        var name = ModuleBaseName(request.Name ?? basis?.Name
            ?? Path.GetFileNameWithoutExtension(request.PatchFiles.FirstOrDefault() ?? "livepatch"));
        IReadOnlyList<LeveledPatch> patches =
            [.. carried, .. context.Select(p => new LeveledPatch(p, level, Context: true)),
                .. added.Select(p => new LeveledPatch(p, level))];
        var cves = (request.CarryBasePatches ? basis?.Cves ?? [] : []).Concat(request.Cves)
            .Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal);
        return new BuildInputs(basis, level, name, patches,
            LivepatchScope.Check(patches.Where(p => !p.Context).Select(p => p.Patch)), [.. cves],
            signer);
    }

    /// <summary>A level replaces the one before it on the same kernel build only.</summary>
    public void CheckBaseIsFor(KernelTarget kernel)
    {
        if (Base is not null && Base.Target.BuildId != kernel.BuildId.ToString())
            throw new ModuleBuildException(
                $"--base was built for {Base.Target.Release} (build-id {Base.Target.BuildId}), not for {kernel}");
    }

    private static (BuildManifest, IReadOnlyList<LeveledPatch>) ReadBase(string directory)
    {
        var manifest = BuildManifest.Read(Path.Combine(directory, "manifest.json"));
        var patches = manifest.Patches.Select(p =>
        {
            var patch = SourcePatch.Read(Path.Combine(directory, p.File));
            if (patch.Sha256 != p.Sha256)
                throw new ModuleBuildException($"{Path.Combine(directory, p.File)} was changed after level " +
                    $"{manifest.Level} was built (sha256 {patch.Sha256}, manifest says {p.Sha256})");
            return new LeveledPatch(patch, p.Level, p.Context == true);
        }).ToList();
        return (manifest, patches);
    }

    /// <summary>Module names are C identifiers of at most 55 characters with the level appended.</summary>
    private static string ModuleBaseName(string name)
    {
        var safe = NotIdentifier().Replace(name.ToLowerInvariant(), "_").Trim('_');
        if (safe.Length == 0 || char.IsAsciiDigit(safe[0])) safe = "livepatch_" + safe;
        return safe.Length > 48 ? safe[..48] : safe;
    }

    [GeneratedRegex("[^a-z0-9_]")]
    private static partial Regex NotIdentifier();
}
