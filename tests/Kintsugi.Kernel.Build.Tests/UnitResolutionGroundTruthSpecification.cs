using System.Diagnostics;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Tests.Oracle;
using Kintsugi.Kernel.Build.Units;
using Kintsugi.Testing;
using Xunit.Abstractions;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// Unit resolution checked against what the distribution really compiled: the compile units of the
/// kernel's debug package (vmlinux and every module). Every compiled C file must be found in the object
/// it was linked into, and none may be called "not built"; a sample of the files that were not compiled
/// must be proven not built.
/// </summary>
public abstract class UnitResolutionGroundTruthSpecification(KernelRelease release, ITestOutputHelper output)
{
    /// <summary>One in this many C files of the tree is sampled among those the debug package shows were not
    /// compiled.</summary>
    private const int NotCompiledSampling = 50;

    private static readonly Dictionary<KernelRelease, Lazy<Task<(FetchedKernel Kernel, KernelSourceTree Tree,
        CompiledSources Oracle)>>> Kernels = [];

    private Task<(FetchedKernel Kernel, KernelSourceTree Tree, CompiledSources Oracle)> KernelAsync()
    {
        lock (Kernels)
        {
            if (!Kernels.TryGetValue(release, out var kernel))
                Kernels[release] = kernel = new(async () =>
                {
                    var fetched = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot)
                        .FetchAsync(release,
                            KernelParts.Image | KernelParts.Headers | KernelParts.Source | KernelParts.Debug);
                    var tree = await KernelSourceTree.PrepareAsync(fetched);
                    return (fetched, tree,
                        await CompiledSources.ReadAsync(fetched, DebianKernelArchive.DefaultCacheRoot));
                });
            return kernel.Value;
        }
    }

    [Fact]
    public async Task Every_C_file_the_debug_package_shows_compiled_is_resolved_to_the_object_it_was_linked_into()
    {
        var (_, tree, oracle) = await KernelAsync();
        var units = KbuildUnits.Open(tree.Directory);
        var inTree = oracle.ObjectsBySource.Where(s => File.Exists(Path.Combine(tree.Directory, s.Key))).ToList();
        var watch = Stopwatch.StartNew();

        var mismatches = inTree.AsParallel().WithDegreeOfParallelism(2).Select(source =>
        {
            var resolution = units.Resolve(source.Key);
            // 6.12 links scripts/module-common.c into every module: refused with that reason, which is right.
            if (resolution is UnitResolution.Unresolved { Reason: var reason }
                && reason.Contains("into every module", StringComparison.Ordinal)) return null;
            if (resolution is not UnitResolution.Built built)
                return $"{resolution} -- but it was compiled into {string.Join(", ", source.Value)}";
            var own = built.Units.Where(u => u.SourcePath == source.Key).Select(u => u.PatchedObject).ToList();
            return own.Count == 1 && source.Value.Contains(own[0]) ? null
                : $"{source.Key}: resolved into " +
                $"{string.Join(", ", built.Units.Select(u => $"{u.SourcePath} in {u.PatchedObject}"))}, compiled " +
                $"into {string.Join(", ", source.Value)}";
        }).OfType<string>().Order(StringComparer.Ordinal).ToList();

        output.WriteLine(
            $"{release}: {oracle.CompileUnits} compile units in the debug package (read in {oracle.ReadSeconds} s " +
            $"when not cached), " +
            $"{oracle.ObjectsBySource.Count} distinct C files, {inTree.Count} of them in the source tree; resolved " +
            $"in {watch.Elapsed.TotalSeconds:0.0} s; {mismatches.Count} mismatches");
        Assert.True(inTree.Count > 2000, $"only {inTree.Count} compiled C files found in the debug package");
        Assert.True(mismatches.Count == 0,
            $"{mismatches.Count} compiled C files resolved wrongly:\n" + string.Join('\n', mismatches.Take(60)));
    }

    [Fact]
    public async Task A_sample_of_C_files_the_debug_package_shows_not_compiled_is_proven_not_built_or_refused()
    {
        var (_, tree, oracle) = await KernelAsync();
        var units = KbuildUnits.Open(tree.Directory);
        var sample = Directory.EnumerateFiles(tree.Directory, "*.c", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(tree.Directory, f))
            .Where(f => !oracle.ObjectsBySource.ContainsKey(f) && StableHash(f) % NotCompiledSampling == 0)
            .Order(StringComparer.Ordinal).ToList();

        var resolutions = sample.AsParallel().WithDegreeOfParallelism(2).Select(units.Resolve).ToList();

        // A file #included into compiled units is compiled, though no compile unit bears its name.
        var wrong = resolutions.OfType<UnitResolution.Built>()
            .Where(b => b.Units.Any(u => u.SourcePath == b.SourcePath || !oracle.ObjectsBySource.TryGetValue(
                u.SourcePath, out var objects) || !objects.Contains(u.PatchedObject)))
            .Select(b => b.ToString()).ToList();
        var unresolved = resolutions.OfType<UnitResolution.Unresolved>().Select(u => u.ToString()).ToList();
        var proven = resolutions.OfType<UnitResolution.NotBuilt>().ToList();
        output.WriteLine($"{release}: {sample.Count} sampled C files not compiled: {proven.Count} proven not built " +
            $"({string.Join(", ", proven.GroupBy(p => p.Proof.Reason).Select(g => $"{g.Key} {g.Count()}"))}), " +
            $"{resolutions.OfType<UnitResolution.Built>().Count() - wrong.Count} #included into compiled units, " +
            $"{unresolved.Count} cannot tell, {wrong.Count} wrongly built");
        foreach (var line in unresolved.Take(40)) output.WriteLine("  " + line);

        Assert.True(sample.Count > 200, $"only {sample.Count} files sampled");
        Assert.All(proven, p => Assert.False(string.IsNullOrWhiteSpace(p.Proof.Statement)));
        Assert.True(wrong.Count == 0, "said built, but compiled into nothing:\n" + string.Join('\n', wrong.Take(40)));
        // "Cannot tell" is a refusal, never a wrong answer; it is kept to the few Makefiles that only work included by
        // others.
        Assert.True(unresolved.Count * 20 <= sample.Count, $"{unresolved.Count} of {sample.Count} not compiled, but " +
            $"the resolver cannot tell:\n" + string.Join('\n', unresolved.Take(40)));
    }

    private static uint StableHash(string text)
    {
        var hash = 2166136261;
        foreach (var c in text) hash = (hash ^ c) * 16777619;
        return hash;
    }
}

[Collection("6.1 cloud kernel")]
public sealed class UnitResolutionGroundTruthOn61CloudKernel(ITestOutputHelper output)
    : UnitResolutionGroundTruthSpecification(TestKernels.Debian12Cloud61, output);

[Collection("6.12 cloud kernel")]
public sealed class UnitResolutionGroundTruthOn612CloudKernel(ITestOutputHelper output)
    : UnitResolutionGroundTruthSpecification(TestKernels.Debian12Cloud612, output);
