using System.Buffers;
using System.Collections.Concurrent;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>
/// Which identifiers the sources of a kernel tree name anywhere (C files, headers, assembly, Makefiles), in one
/// pass over the tree for all of them: a name no source mentions cannot change what the tree compiles.
/// </summary>
public static class SourceNames
{
    private static readonly string[] SkippedRoots = ["Documentation", "tools", "samples", ".git"];

    /// <summary>Each name that some source of <paramref name="tree"/> names as a whole word → the first such file
    /// found (relative to the tree). Names found nowhere are absent.</summary>
    public static IReadOnlyDictionary<string, string> FilesNaming(string tree, IReadOnlyCollection<string> names)
    {
        var found = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        if (names.Count == 0) return found;
        var distinct = names.Distinct(StringComparer.Ordinal).ToArray();
        var search = SearchValues.Create(distinct, StringComparison.Ordinal);
        var files = Directory.EnumerateFiles(tree, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(tree, f))
            .Where(IsSource);
        Parallel.ForEach(files, file =>
        {
            ReadOnlySpan<char> text = File.ReadAllText(Path.Combine(tree, file));
            for (var offset = 0; offset < text.Length;)
            {
                var at = text[offset..].IndexOfAny(search);
                if (at < 0) break;
                at += offset;
                foreach (var name in distinct)
                    if (text[at..].StartsWith(name, StringComparison.Ordinal) && IsWord(text, at, name.Length))
                        found.TryAdd(name, file);
                offset = at + 1;
            }
        });
        return found;
    }

    private static bool IsSource(string path)
    {
        if (SkippedRoots.Any(root => path.StartsWith(root + "/", StringComparison.Ordinal))) return false;
        var name = Path.GetFileName(path);
        return name.EndsWith(".c", StringComparison.Ordinal) || name.EndsWith(".h", StringComparison.Ordinal)
            || name.EndsWith(".S", StringComparison.Ordinal) || name.StartsWith("Makefile", StringComparison.Ordinal)
            || name.StartsWith("Kbuild", StringComparison.Ordinal);
    }

    private static bool IsWord(ReadOnlySpan<char> text, int start, int length) =>
        (start == 0 || !IsIdentifier(text[start - 1]))
        && (start + length == text.Length || !IsIdentifier(text[start + length]));

    private static bool IsIdentifier(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';
}
