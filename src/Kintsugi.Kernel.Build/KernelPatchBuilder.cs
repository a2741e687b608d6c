using System.Reflection;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Binding;
using Kintsugi.Kernel.Build.Phases;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Kernel.Build.Units;
using Kintsugi.Lab;

namespace Kintsugi.Kernel.Build;

/// <summary>
/// From source fixes to a proven livepatch module for one exact distribution kernel: fetch and prepare the
/// kernel's own source once, compile only the units the fixes touch (as the distribution did, to prove the
/// build reproduces the shipped code; and before and after the fix, one section per function, for the
/// differ), resolve every reference the new code makes into the running kernel, and link the module.
/// </summary>
public sealed class KernelPatchBuilder(DebianKernelArchive archive, Func<LabMachine> lab, Action<string> progress)
{
    public static string BuilderVersion =>
        typeof(KernelPatchBuilder).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()
            ?.InformationalVersion
        ?? "unknown";

    /// <summary>The build as a list of phases; each takes the results of the ones before it.</summary>
    public async Task<KernelBuildResult> BuildAsync(KernelBuildRequest request,
        CancellationToken cancellation = default)
    {
        var clock = new StageClock(progress);
        // Everything that can be refused from the inputs alone is refused before anything is downloaded.
        var inputs = BuildInputs.Read(request);
        var target = await clock.RunAsync("download", () => OpenTargetAsync(request.Target, cancellation));
        inputs.CheckBaseIsFor(target.Target);
        var tree = await clock.RunAsync("prepare", () => target.PrepareAsync(progress, cancellation));

        var scope = clock.Run("scope", () => UnitSelection.Select(tree, inputs.Scope, request.MaxUnits, progress));
        var units = scope.Units;
        if (units.Count == 0) return NothingToDo(clock, scope.NothingBuiltMessage);

        var output = BuildOutput.Create(request.OutputDirectory);
        var compiled = await UnitCompilation.CompileAsync(target, tree, units, inputs.Patches, output.Work, clock,
            cancellation, request.PrecompiledAfter);

        var exports = new Lazy<ModuleSymvers>(target.LoadExports);
        var diffs = clock.Run("diff", () => UnitDiffing.DiffAll(compiled, exports,
            ReferenceBinder.ObjtoolRunsAtModuleLink(target.ModuleBuildDirectory)));
        UnitDiffing.ThrowIfRefused(diffs);
        var changed = diffs.Where(d => d.Contributes).ToList();
        if (changed.Count == 0)
            return NothingToDo(clock, "the fix changes no machine code of this kernel: there is nothing to live patch" +
                string.Concat(diffs.SelectMany(d => d.Notes).Select(n => "\n  " + n)));

        var resolved = await clock.RunAsync("resolve",
            () => PatchResolution.ResolveAsync(target, changed, exports.Value, request.SkipFidelity,
                units => UnitCompilation.CompileOriginalsAsync(target, tree, units, clock, cancellation),
                progress, cancellation));
        resolved.ThrowIfUnfaithful(request.SkipFidelity);

        var patchFiles = await output.WritePatchesAsync(inputs.Patches, cancellation);
        var manifest = ManifestAssembly.Assemble(inputs, target.Target, patchFiles, changed, resolved,
            request.SkipFidelity);
        var module = await ModuleLinking.LinkAsync(target, tree, inputs, changed, resolved, manifest, exports.Value,
            output, request.Signing, clock, cancellation);

        var summary = $"{manifest.Module}.ko: {resolved.Functions.Count} function(s) replaced in " +
            $"{string.Join(", ", module.Objects.Select(o => o.Name))}, {resolved.Bindings.Count} symbol(s) bound at " +
            $"load time";
        return new KernelBuildResult(BuildOutcome.Built, module.ModulePath, module.ManifestPath, manifest, summary,
            clock.Stages);
    }

    private async Task<BuildTarget> OpenTargetAsync(TargetReference reference, CancellationToken cancellation) =>
        reference switch
        {
            TargetReference.Debian debian =>
                await DebianBuildTarget.FetchAsync(archive, debian.Release, lab, cancellation),
            TargetReference.TargetDirectory directory =>
                await DirectoryBuildTarget.OpenAsync(directory.Path, cancellation),
            _ => throw new ArgumentException($"unknown target {reference}"),
        };

    private static KernelBuildResult NothingToDo(StageClock clock, string message) =>
        new(BuildOutcome.NothingToDo, null, null, null, message, clock.Stages);
}
