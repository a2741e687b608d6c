using System.Diagnostics;
using Kintsugi;
using Kintsugi.Diff;
using Kintsugi.Elf;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;

// Two commands, run as separate processes so that the diff's peak memory is measured alone:
//   prepare RELEASE                 fetch and prepare the kernel's tree (prints its directory)
//   compile RELEASE OUTDIR FIX...   fetch and prepare the kernel's tree with the builder's own API (shared, locked
//                                   cache), then compile each fixed unit before and after its fix into
//                                   OUTDIR/{original,patched}
//   diff ORIGINAL.o PATCHED.o RUNS  read both objects, diff, write the output; RUNS times in-process, prints the median
return args switch
{
    ["prepare", var release] => await Prepare(KernelRelease.Parse(release)),
    ["compile", var release, var outDirectory, .. var fixes] when fixes.Length > 0 =>
    await Compile(KernelRelease.Parse(release), outDirectory, fixes),
    ["diff", var original, var patched, var runs] => Diff(original, patched, int.Parse(runs)),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: compile RELEASE OUTDIR FIX.patch... | diff ORIGINAL.o PATCHED.o RUNS");
    return 2;
}

static async Task<KernelSourceTree> Tree(KernelRelease release)
{
    var clock = Stopwatch.StartNew();
    var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot, Console.Error.WriteLine);
    var kernel = await archive.FetchAsync(release, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
    var tree = await KernelSourceTree.PrepareAsync(kernel, Console.Error.WriteLine);
    Console.Error.WriteLine($"tree ready in {clock.Elapsed.TotalSeconds:F0} s: {tree.Directory}");
    return tree;
}

static async Task<int> Prepare(KernelRelease release)
{
    Console.WriteLine((await Tree(release)).Directory);
    return 0;
}

static async Task<int> Compile(KernelRelease release, string outDirectory, string[] fixes)
{
    var clock = Stopwatch.StartNew();
    var tree = await Tree(release);
    // The flags the builder adds to the distribution's for the units it diffs.
    const string flags = "-ffunction-sections -fdata-sections";
    var patches = fixes.Select(SourcePatch.Read).ToList();
    var units = patches.Select(p => Path.ChangeExtension(p.Files.Single().Path, ".o")).ToList();
    await using (var workspace = await BuildWorkspace.OpenAsync(tree))
        await workspace.CompileAllAsync(units, Path.Combine(outDirectory, "original"), flags);
    await using (var workspace = await BuildWorkspace.OpenAsync(tree))
    {
        foreach (var patch in patches) await workspace.ApplyAsync(patch);
        await workspace.CompileAllAsync(units, Path.Combine(outDirectory, "patched"), flags);
    }
    foreach (var unit in units) Console.WriteLine(unit);
    Console.Error.WriteLine($"compiled {units.Count} units before and after their fixes in " +
        $"{clock.Elapsed.TotalSeconds:F0} s");
    return 0;
}

static int Diff(string originalPath, string patchedPath, int runs)
{
    var times = new List<double>();
    string summary = "";
    double first = 0;
    for (var run = 0; run < runs; run++)
    {
        var clock = Stopwatch.StartNew();
        var original = ElfObject.Load(originalPath);
        var patched = ElfObject.Load(patchedPath);
        var result =
            ObjectDiffer.Diff(original, patched, new DiffOptions(PatchedObjectName.Vmlinux, "kintsugi_bench_"));
        var output = result.Output?.ToArray() ?? [];
        times.Add(clock.Elapsed.TotalMilliseconds);
        if (run == 0) first = times[0];
        var changed = result.Functions.Where(f => f.Kind == FunctionChange.Changed).Select(f => f.Name).ToList();
        summary =
            $"{changed.Count} changed ({string.Join(", ", changed.Take(3))}) of {result.Functions.Count} functions, " +
            $"{result.Refusals.Count} refusals, output {output.Length} bytes (sha256 " +
            $"{Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(output))[..12]})";
    }
    times.Sort();
    var original0 = new FileInfo(originalPath).Length;
    // One line for run.sh: median and first run in ms, input size, what the diff found.
    Console.WriteLine($"median_ms={times[times.Count / 2]:F0} first_ms={first:F0} min_ms={times[0]:F0} " +
        $"max_ms={times[^1]:F0} input_bytes={original0} {summary}");
    return 0;
}
