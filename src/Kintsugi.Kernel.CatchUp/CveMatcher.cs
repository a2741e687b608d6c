using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.CatchUp;

[JsonConverter(typeof(JsonStringEnumConverter<MatchConfidence>))]
public enum MatchConfidence { Low, Medium, High }

/// <summary>How one changelog item was tied to one changed file.</summary>
/// <param name="How">function (a name in the subject is a function or definition the file's change touches), path (the
/// subject's prefix names the file's directory or file), or both.</param>
public sealed record CveFileMatch(string Path, string How, MatchConfidence Confidence, string Evidence);

/// <summary>A CVE of the changelog and the changed files it maps to; no files when nothing matched.</summary>
public sealed record CveMapping(string Cve, IReadOnlyList<ChangelogItem> Items, IReadOnlyList<CveFileMatch> Files)
{
    public MatchConfidence? Confidence => Files.Count == 0 ? null : Files.Min(f => f.Confidence);
}

/// <summary>
/// Ties each CVE of the changelog to the changed files that carry its fix, from the upstream commit subject:
/// identifiers in the subject that name a changed function or definition of a file (the strongest evidence),
/// and the subject's prefix ("fs/smb/client:", "can: bcm:", "KVM: x86/mmu:") against the file's path. Every
/// match says how it was made and how sure it is; a CVE nothing matches is reported as unmapped.
/// </summary>
public static partial class CveMatcher
{
    public static IReadOnlyList<CveMapping> Match(IEnumerable<ChangelogItem> items, IReadOnlyList<ChangedFile> files)
    {
        var byCve = new SortedDictionary<string, List<ChangelogItem>>(StringComparer.Ordinal);
        foreach (var item in items)
            foreach (var cve in item.Cves)
            {
                if (!byCve.TryGetValue(cve, out var list)) byCve[cve] = list = [];
                list.Add(item);
            }
        return [.. byCve.Select(kv => new CveMapping(kv.Key, kv.Value,
            [.. kv.Value.SelectMany(item => MatchItem(item, files)).GroupBy(m => m.Path)
                .Select(g => g.MaxBy(m => m.Confidence)!).OrderBy(m => m.Path, StringComparer.Ordinal)]))];
    }

    /// <summary>The files one commit subject maps to.</summary>
    public static IReadOnlyList<CveFileMatch> MatchItem(ChangelogItem item, IReadOnlyList<ChangedFile> files)
    {
        var (prefix, description) = SplitSubject(item.Subject);
        var identifiers = Identifiers(description).Concat(Identifiers(prefix)).Distinct(StringComparer.Ordinal)
            .ToList();
        // Documentation, tools and selftests share the subject's words but carry no fix of the running kernel.
        files = [.. files.Where(f => Build.LivepatchScope.Classify(new Build.FileChange(f.Path, null, f.Kind, 0, 0))
            .Scope != Build.ChangeScope.Ignored)];
        var byFunction = files
            .Select(f => (File: f, Names: identifiers.SelectMany(id => NamedIn(id, f)).Distinct().ToList()))
            .Where(x => x.Names.Count > 0).ToList();
        var byPath = PathMatches(prefix, files);
        var matches = new List<CveFileMatch>();
        if (byFunction.Count > 0)
        {
            var both = byFunction.Where(x => byPath.Contains(x.File)).ToList();
            foreach (var (file, names) in both.Count > 0 ? both : byFunction)
                matches.Add(new CveFileMatch(file.Path, both.Count > 0 ? "function and path" : "function",
                    both.Count > 0 || byFunction.Count == 1 ? MatchConfidence.High : MatchConfidence.Medium,
                    $"the subject names {string.Join(", ", names)}, changed in this file"
                    + (both.Count > 0 ? $", and its prefix '{prefix}' names the file's path" : "")));
            return matches;
        }
        foreach (var file in byPath)
            matches.Add(
                new CveFileMatch(file.Path, "path", byPath.Count <= 2 ? MatchConfidence.Medium : MatchConfidence.Low,
                $"the subject's prefix '{prefix}' names the file's path ({byPath.Count} changed file(s) match it)"));
        return matches;
    }

    /// <summary>
    /// The changed definitions of a file an identifier names: the same name, or the same name behind leading
    /// underscores (a subject says unix_gc() where the 6.1 backport changed __unix_gc).
    /// </summary>
    private static IEnumerable<string> NamedIn(string identifier, ChangedFile file)
    {
        if (file.Functions.Contains(identifier) || file.Constructs.Contains(identifier))
        { yield return identifier; yield break; }
        var bare = identifier.TrimStart('_');
        foreach (var name in file.Functions.Where(n => n != identifier && n.TrimStart('_') == bare)) yield return name;
    }

    /// <summary>"netfilter: nf_tables: fix x in y()" → ("netfilter: nf_tables", "fix x in y()").</summary>
    internal static (string Prefix, string Description) SplitSubject(string subject)
    {
        var parts = new List<string>();
        var rest = subject;
        while (PrefixPart().Match(rest) is { Success: true } part)
        {
            parts.Add(part.Groups["part"].Value);
            rest = rest[part.Length..];
        }
        return (string.Join(": ", parts), rest.Trim());
    }

    /// <summary>The changed files with the most prefix words among their path components or file name, in order; none
    /// when no word matches.</summary>
    private static List<ChangedFile> PathMatches(string prefix, IReadOnlyList<ChangedFile> files)
    {
        var words = prefix.Split([':', '/', ' ', ','], StringSplitOptions.RemoveEmptyEntries)
            .Select(w => w.ToLowerInvariant()).Where(w => w.Length >= 2 && !CommonWords.Contains(w)).ToList();
        if (words.Count == 0) return [];
        var scored = files.Select(f => (File: f, Score: Score(f.Path, words))).Where(x => x.Score > 0).ToList();
        if (scored.Count == 0) return [];
        var best = scored.Max(x => x.Score);
        return [.. scored.Where(x => x.Score == best).Select(x => x.File)];
    }

    private static int Score(string path, IReadOnlyList<string> words)
    {
        var components = path.ToLowerInvariant().Split('/');
        var stem = System.IO.Path.GetFileNameWithoutExtension(components[^1]);
        var names = components[..^1].Append(stem).ToList();
        var score = 0;
        foreach (var word in words)
        {
            var w = word.Replace('-', '_');
            // A whole component, or a file named after the word (nf_tables → nf_tables_api.c, mlx5 → mlx5_core).
            if (names.Any(n => n.Replace('-', '_') == w)) score += 2;
            else if (names.Any(n => n.Replace('-', '_').StartsWith(w + "_", StringComparison.Ordinal))) score += 1;
        }
        return score;
    }

    private static IEnumerable<string> Identifiers(string text) =>
        Identifier().Matches(text).Select(m => m.Groups["name"].Value)
            .Where(name => name.Contains('_') || text.Contains(name + "()", StringComparison.Ordinal))
            .Where(name => name.Length >= 3 && !CommonWords.Contains(name.ToLowerInvariant()));

    private static readonly HashSet<string> CommonWords = ["fix", "fixes", "add", "the", "and", "for", "use", "don",
        "not", "with", "from",
        "when", "drivers", "net", "fs", "mm", "kernel", "lib", "include", "linux", "revert", "arch", "x86"];

    [GeneratedRegex(@"^\s*(?<part>[A-Za-z0-9_./,+\- ]{1,40}?):\s+")]
    private static partial Regex PrefixPart();

    [GeneratedRegex(@"(?<![A-Za-z0-9_])(?<name>[A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_])")]
    private static partial Regex Identifier();
}
