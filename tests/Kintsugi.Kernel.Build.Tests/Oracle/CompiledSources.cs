using Kintsugi.Kernel.Archive;

namespace Kintsugi.Kernel.Build.Tests.Oracle;

/// <summary>
/// Ground truth for unit resolution: which C files the distribution compiled into vmlinux and into each
/// module, from the compile units of its debug package (linux-image-RELEASE-dbg). A test oracle only; the
/// builder never needs the debug package. The list is cached by the debug vmlinux's build-id and the
/// package version, so only the first run reads the 1.7 GB of DWARF.
/// </summary>
public sealed record CompiledSources(IReadOnlyDictionary<string, IReadOnlyList<string>> ObjectsBySource,
    int CompileUnits, double ReadSeconds)
{
    public static async Task<CompiledSources> ReadAsync(FetchedKernel kernel, string cacheRoot)
    {
        var debugPackage = kernel.Packages.Single(p =>
            p.StartsWith($"linux-image-{kernel.Target.Release}-dbg=", StringComparison.Ordinal));
        var key = $"{kernel.Target.BuildId}-{debugPackage.Split('=')[1]}";
        var cache = Path.Combine(cacheRoot, "unit-oracle", kernel.Target.Release.Value, key + ".tsv");
        if (File.Exists(cache)) return Parse(await File.ReadAllLinesAsync(cache));

        var watch = System.Diagnostics.Stopwatch.StartNew();
        var debugRoot = Path.Combine(kernel.Root, "usr", "lib", "debug", "lib", "modules", kernel.Target.Release.Value);
        var files = new List<(string Object, string Path)> { ("vmlinux", kernel.DebugVmlinux!) };
        files.AddRange(Directory.EnumerateFiles(Path.Combine(debugRoot, "kernel"), "*.ko", SearchOption.AllDirectories)
            .Select(f => (Path.GetFileNameWithoutExtension(f).Replace('-', '_'), f)));
        var units = files.AsParallel().WithDegreeOfParallelism(2)
            .SelectMany(f => DwarfCompileUnits.Read(f.Path).Select(name => (f.Object, Name: name))).ToList();
        var bySource = units.Where(u => u.Name.EndsWith(".c", StringComparison.Ordinal) && !u.Name.StartsWith('/'))
            .GroupBy(u => Normalize(u.Name), StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<string>)[
                .. g.Select(u => u.Object).Distinct().Order(StringComparer.Ordinal)], StringComparer.Ordinal);
        var result = new CompiledSources(bySource, units.Count, Math.Round(watch.Elapsed.TotalSeconds, 1));

        Directory.CreateDirectory(Path.GetDirectoryName(cache)!);
        await File.WriteAllLinesAsync(cache + ".tmp", [
            $"# {result.CompileUnits} {result.ReadSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)}",
            .. bySource.OrderBy(s => s.Key, StringComparer.Ordinal)
            .Select(s => $"{s.Key}\t{string.Join(',', s.Value)}")]);
        File.Move(cache + ".tmp", cache, overwrite: true);
        return result;
    }

    /// <summary>The cached form: a header line "# UNITS SECONDS", then "source TAB object,object".</summary>
    private static CompiledSources Parse(string[] lines)
    {
        var header = lines[0].Split(' ');
        var bySource = lines.Skip(1).Select(l => l.Split('\t')).GroupBy(p => Normalize(p[0]), StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<string>)[.. g.SelectMany(p => p[1].Split(',')).Distinct()
                .Order(StringComparer.Ordinal)], StringComparer.Ordinal);
        return new CompiledSources(bySource, int.Parse(header[1]),
            double.Parse(header[2], System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>A compile unit's name as a path in the tree: kbuild names some through their list's relative path
    /// (arch/x86/kvm/../../../virt/kvm/kvm_main.c).</summary>
    private static string Normalize(string name)
    {
        var parts = new List<string>();
        foreach (var part in name.Split('/'))
        {
            if (part is "." or "") continue;
            if (part == ".." && parts.Count > 0) parts.RemoveAt(parts.Count - 1);
            else parts.Add(part);
        }
        return string.Join('/', parts);
    }
}
