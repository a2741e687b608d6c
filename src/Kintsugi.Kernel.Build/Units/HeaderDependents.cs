using System.Collections.Concurrent;
using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.Build.Units;

/// <summary>
/// The C files that include a header, directly or through other headers, in an x86-64 kernel tree. A fix to
/// an inline helper or a macro changes the code of every unit that includes it, so every one of them is
/// compiled before and after; the differ then keeps only the functions whose code really changed.
/// </summary>
public sealed partial class HeaderDependents
{
    private static readonly string[] SkippedRoots = ["Documentation", "tools", "samples", "scripts", "usr", ".git"];
    private static readonly string[] SystemIncludeRoots = ["arch/x86/include", "arch/x86/include/generated", "include",
        "arch/x86/include/uapi", "include/uapi", "arch/x86/include/generated/uapi", "include/generated/uapi"];

    /// <summary>Header path → the files that include it.</summary>
    private readonly Dictionary<string, List<string>> _includedBy;

    private HeaderDependents(Dictionary<string, List<string>> includedBy) => _includedBy = includedBy;

    private static readonly ConcurrentDictionary<string, Lazy<HeaderDependents>> Scanned = new(StringComparer.Ordinal);

    /// <summary>The include graph of a prepared tree, read once per process: a prepared tree does not change.</summary>
    public static HeaderDependents Of(string tree) =>
        Scanned.GetOrAdd(Path.GetFullPath(tree), t => new Lazy<HeaderDependents>(() => Scan(t))).Value;

    /// <summary>Reads every #include of the tree's C files and headers once (a few seconds).</summary>
    public static HeaderDependents Scan(string tree)
    {
        var edges = new ConcurrentBag<(string Header, string Includer)>();
        var files = Directory.EnumerateFiles(tree, "*.*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(tree, f))
            .Where(f => (f.EndsWith(".c", StringComparison.Ordinal) || f.EndsWith(".h", StringComparison.Ordinal))
                && !Skipped(f));
        Parallel.ForEach(files, file =>
        {
            var directory = Path.GetDirectoryName(file) ?? "";
            foreach (var line in File.ReadLines(Path.Combine(tree, file)))
            {
                if (!line.StartsWith('#')) continue;
                var match = Include().Match(line);
                if (!match.Success) continue;
                var name = match.Groups["name"].Value;
                var quoted = match.Groups["open"].Value == "\"";
                var resolved = (quoted ? QuotedCandidates(directory, name) : [])
                    .Concat(SystemIncludeRoots.Select(root => Path.Combine(root, name)))
                    .FirstOrDefault(candidate => File.Exists(Path.Combine(tree, candidate)));
                if (resolved is not null && resolved.Contains("..", StringComparison.Ordinal))
                    resolved = Path.GetRelativePath(tree, Path.GetFullPath(Path.Combine(tree, resolved)));
                // Another architecture's file is kept as an includer (it proves a shared header is not built there),
                // but its <asm/...> names its own architecture's headers, never x86's.
                if (resolved is not null
                    && !(OtherArchitecture(file) && resolved.StartsWith("arch/x86/", StringComparison.Ordinal)))
                    edges.Add((resolved, file));
            }
        });
        var includedBy = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var (header, includer) in edges)
        {
            if (!includedBy.TryGetValue(header, out var list)) includedBy[header] = list = [];
            list.Add(includer);
        }
        return new HeaderDependents(includedBy);
    }

    /// <summary>
    /// Where a quoted include may be found: beside the including file, then in each directory above it.
    /// Makefiles add their driver's root to the include path (<c>-I$(srctree)/drivers/.../mlx5/core</c>, so
    /// core/en/x.c includes "en.h" from core/); missing such an edge would leave a header fix's unit out,
    /// while an extra one only compiles a unit whose code then does not change.
    /// </summary>
    private static IEnumerable<string> QuotedCandidates(string directory, string name)
    {
        for (var current = directory; ; current = Path.GetDirectoryName(current) ?? "")
        {
            yield return current.Length == 0 ? name : Path.Combine(current, name);
            if (current.Length == 0) yield break;
        }
    }

    /// <summary>Every C file that includes <paramref name="header"/> (a path relative to the tree), sorted.</summary>
    public IReadOnlyList<string> SourcesIncluding(string header)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal) { header };
        var queue = new Queue<string>([header]);
        var sources = new SortedSet<string>(StringComparer.Ordinal);
        while (queue.TryDequeue(out var current))
        {
            if (!_includedBy.TryGetValue(current, out var includers)) continue;
            foreach (var includer in includers)
            {
                if (!seen.Add(includer)) continue;
                if (includer.EndsWith(".c", StringComparison.Ordinal)) sources.Add(includer);
                else queue.Enqueue(includer);
            }
        }
        return [.. sources];
    }

    private static bool Skipped(string path)
    {
        var first = path.Split('/')[0];
        return SkippedRoots.Contains(first);
    }

    /// <summary>Other architectures' files never build into an x86-64 kernel.</summary>
    private static bool OtherArchitecture(string path) =>
        path.StartsWith("arch/", StringComparison.Ordinal) && !path.StartsWith("arch/x86/", StringComparison.Ordinal);

    [GeneratedRegex(@"^#\s*include\s*(?<open>[<""])(?<name>[^>""]+)[>""]")]
    private static partial Regex Include();
}
