using System.Text.RegularExpressions;
using Kintsugi.Diff;
using Kintsugi.Kernel.Build.Livepatch;
using Kintsugi.Kernel.Build.Symbols;

namespace Kintsugi.Kernel.Build.Phases;

/// <summary>The finished module in the output directory, with its manifest beside it.</summary>
public sealed record LinkedModule(string ModulePath, string ManifestPath, BuildManifest Manifest,
    IReadOnlyList<KlpObject> Objects);

/// <summary>
/// The output directory of one build: the fixes of every level (so that the next level can carry them
/// forward), the module, manifest.json, and a scratch directory that only a finished build removes.
/// </summary>
public sealed partial class BuildOutput
{
    private BuildOutput(string directory) => Directory = directory;

    public string Directory { get; }

    /// <summary>Scratch space of this build; a later build starts it afresh.</summary>
    public string Work => Path.Combine(Directory, ".work");

    public static BuildOutput Create(string directory)
    {
        var output = new BuildOutput(Path.GetFullPath(directory));
        if (System.IO.Directory.Exists(output.Work)) System.IO.Directory.Delete(output.Work, recursive: true);
        return output;
    }

    /// <summary>Writes every level's fixes as patches/NNN-name and describes them for the manifest.</summary>
    public async Task<IReadOnlyList<ManifestPatch>> WritePatchesAsync(IReadOnlyList<LeveledPatch> patches,
        CancellationToken cancellation)
    {
        System.IO.Directory.CreateDirectory(Path.Combine(Directory, "patches"));
        var written = new List<ManifestPatch>();
        for (var i = 0; i < patches.Count; i++)
        {
            var (patch, level, context) = (patches[i].Patch, patches[i].Level, patches[i].Context);
            var file = Path.Combine("patches", $"{i + 1:D3}-{SafeFileName(patch.Name)}");
            await File.WriteAllTextAsync(Path.Combine(Directory, file), patch.Text, cancellation);
            written.Add(new ManifestPatch(patch.Name, patch.Sha256, patch.Subject, file, level, context ? true : null));
        }
        return written;
    }

    /// <summary>Moves the linked module in, writes its manifest, and removes the scratch directory.</summary>
    public async Task<(string Module, string Manifest)> PublishAsync(string linkedModule, BuildManifest manifest,
        CancellationToken cancellation)
    {
        var module = Path.Combine(Directory, manifest.Module + ".ko");
        File.Copy(linkedModule, module, overwrite: true);
        var manifestPath = Path.Combine(Directory, "manifest.json");
        await File.WriteAllBytesAsync(manifestPath, manifest.ToUtf8(), cancellation);
        System.IO.Directory.Delete(Work, recursive: true);
        return (module, manifestPath);
    }

    private static string SafeFileName(string name) => UnsafeFileNameCharacter().Replace(Path.GetFileName(name), "_");

    [GeneratedRegex("[^A-Za-z0-9._-]")]
    private static partial Regex UnsafeFileNameCharacter();
}

/// <summary>The manifest of a build: what was patched, where, how each symbol was identified, and by whom.</summary>
public static class ManifestAssembly
{
    public static BuildManifest Assemble(BuildInputs inputs, KernelTarget kernel, IReadOnlyList<ManifestPatch> patches,
        IReadOnlyList<UnitDiff> changed, ResolvedPatch resolved, bool skipFidelity) =>
        new(BuildManifest.CurrentFormat, inputs.ModuleName, inputs.Name, inputs.Level,
            new ManifestTarget(kernel.Release.Value, kernel.PackageVersion, kernel.BuildId.ToString()),
            patches, inputs.Cves,
            [.. changed.Select(d => new ManifestUnit(d.Unit.SourcePath, d.Unit.ObjectPath, d.Unit.PatchedObject,
                [.. d.Result.Functions.Where(f => f.Kind == FunctionChange.Changed).Select(f => f.Name)],
                [.. d.Result.Functions.Where(f => f.Kind == FunctionChange.New).Select(f => f.Name)]))],
            [.. resolved.Functions.Select(f => f.Record)],
            [.. resolved.Bindings.Select(b => b.Record).OrderBy(r => r.Object, StringComparer.Ordinal)
                .ThenBy(r => r.Name, StringComparer.Ordinal)],
            resolved.Fidelity(skipFidelity), KernelPatchBuilder.BuilderVersion, DateTimeOffset.UtcNow, inputs.Signer,
        resolved.InertSites.Count > 0 ? resolved.InertSites : null);
}

/// <summary>
/// The link phase: the differ's objects, the livepatch registration generated from the resolved patch, and the
/// manifest become one kernel module, built with the kernel's own kbuild (and signed when a key is given).
/// </summary>
public static class ModuleLinking
{
    public static async Task<LinkedModule> LinkAsync(BuildTarget target, KernelSourceTree tree, BuildInputs inputs,
        IReadOnlyList<UnitDiff> changed, ResolvedPatch resolved, BuildManifest manifest, ModuleSymvers exports,
        BuildOutput output, ModuleSigningKey? signing, StageClock clock, CancellationToken cancellation)
    {
        var kernel = target.Target;
        var diffObjects = new List<string>();
        for (var i = 0; i < changed.Count; i++)
        {
            var path = Path.Combine(output.Work, "diff", $"unit{i}.o");
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            changed[i].Result.Output!.Save(path);
            diffObjects.Add(path);
        }
        var objects = changed.Select(d => d.Unit.PatchedObject).Distinct(StringComparer.Ordinal)
            .OrderBy(o => o == KernelObjectNames.Vmlinux ? 0 : 1).ThenBy(o => o, StringComparer.Ordinal)
            .Select(o => new KlpObject(o, [.. resolved.Functions.Where(f => f.Object == o).Select(f => f.Function)],
                resolved.Callbacks.GetValueOrDefault(o) ?? []))
            .ToList();
        var description = $"Kintsugi livepatch {inputs.Name} level {inputs.Level} for {kernel.Release}" +
            (inputs.Cves.Count > 0 ? $" ({string.Join(", ", inputs.Cves)})" : "");
        var spec = new LivepatchModuleSpec(inputs.ModuleName, description, objects, diffObjects,
            [.. resolved.Bindings.Select(b => b.Binding)], manifest.ToUtf8(),
            EffectiveVersion: kernel.PackageVersion is { } version ? $"{version}+kintsugi{inputs.Level}" : null);
        var built = await clock.RunAsync("link",
            () => LivepatchModuleBuilder.BuildAsync(kernel, target.ModuleBuildDirectory,
            spec, exports, Path.Combine(output.Work, "module"), cancellation, tree.Toolchain, tree.Visible));
        if (signing is not null)
            await clock.RunAsync("sign",
                () =>
                ModuleSigner.SignAsync(built, signing, [tree.Directory, target.ModuleBuildDirectory], cancellation));
        var (module, manifestPath) = await output.PublishAsync(built, manifest, cancellation);
        return new LinkedModule(module, manifestPath, manifest, objects);
    }
}
