using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>One item of a changelog version: an upstream commit subject ("can: bcm: fix ... (CVE-2026-72117)") or a
/// packaging note.</summary>
/// <param name="Architectures">Debian's [x86] / [arm64] tags: the change is built only there.</param>
/// <param name="Subject">The text without tags and without the trailing CVE list.</param>
public sealed record ChangelogItem(string Version, string Subject, IReadOnlyList<string> Architectures,
    IReadOnlyList<string> Cves, string Text);

/// <summary>One version's entry of a Debian changelog.</summary>
public sealed record ChangelogVersion(string Version, string Distribution, IReadOnlyList<ChangelogItem> Items);

/// <summary>
/// Debian's changelog of the linux package (changelog.Debian.gz of linux-source): versions newest first,
/// each a list of items, upstream stable updates as "- subject (CVE-...)" lines that may wrap.
/// </summary>
public sealed partial class DebianChangelog
{
    public IReadOnlyList<ChangelogVersion> Versions { get; }

    private DebianChangelog(IReadOnlyList<ChangelogVersion> versions) => Versions = versions;

    public static DebianChangelog Read(string path)
    {
        try
        {
            using var file = File.OpenRead(path);
            using Stream stream = path.EndsWith(".gz", StringComparison.Ordinal)
                ? new GZipStream(file, CompressionMode.Decompress) : file;
            using var reader = new StreamReader(stream, Encoding.UTF8);
            return Parse(reader.ReadToEnd());
        }
        catch (Exception e) when (e is IOException or InvalidDataException)
        {
            throw new CatchUpException($"cannot read the changelog {path}: {e.Message}", inner: e);
        }
    }

    public static DebianChangelog Parse(string text)
    {
        var versions = new List<ChangelogVersion>();
        string? version = null, distribution = null;
        var items = new List<ChangelogItem>();
        var item = new StringBuilder();
        var itemIndent = -1;

        void FlushItem()
        {
            if (item.Length > 0 && version is not null) items.Add(MakeItem(version, item.ToString()));
            item.Clear();
            itemIndent = -1;
        }
        void FlushVersion()
        {
            FlushItem();
            if (version is not null) versions.Add(new ChangelogVersion(version, distribution!, [.. items]));
            items.Clear();
        }

        foreach (var raw in text.Replace("\r\n", "\n").Split('\n'))
        {
            var header = Header().Match(raw);
            if (header.Success)
            {
                FlushVersion();
                version = header.Groups["version"].Value;
                distribution = header.Groups["distribution"].Value;
                continue;
            }
            if (version is null) continue;
            if (raw.StartsWith(" -- ", StringComparison.Ordinal)) { FlushItem(); continue; }
            var trimmed = raw.TrimStart();
            var indent = raw.Length - trimmed.Length;
            if (trimmed.Length == 0) { FlushItem(); continue; }
            if (trimmed.StartsWith("* ", StringComparison.Ordinal)
                || trimmed.StartsWith("- ", StringComparison.Ordinal))
            {
                FlushItem();
                item.Append(trimmed[2..].Trim());
                itemIndent = indent;
                continue;
            }
            // A continuation is indented deeper than its bullet; anything else (a URL line, "[ Name ]") ends the item.
            if (itemIndent >= 0 && indent > itemIndent && !trimmed.StartsWith("http", StringComparison.Ordinal))
                item.Append(' ').Append(trimmed);
            else FlushItem();
        }
        FlushVersion();
        if (versions.Count == 0)
            throw new CatchUpException(
                "the changelog has no version entry ('package (version) distribution; urgency=...')");
        return new DebianChangelog(versions);
    }

    /// <summary>
    /// The versions after <paramref name="from"/> up to and including <paramref name="to"/>, newest first: what
    /// moving from one to the other brings. Both must be in the changelog, in that order.
    /// </summary>
    public IReadOnlyList<ChangelogVersion> Between(string from, string to)
    {
        var top = Versions.Select((v, i) => (v, i)).FirstOrDefault(x => x.v.Version == to);
        if (top.v is null)
            throw new CatchUpException($"the changelog has no entry for {to} (its newest is {Versions[0].Version})");
        var bottom = Versions.Select((v, i) => (v, i)).FirstOrDefault(x => x.v.Version == from);
        if (bottom.v is null)
            throw new CatchUpException($"the changelog of {to} has no entry for {from}: they are not versions of one " +
                $"line, or {from} is newer");
        if (bottom.i <= top.i) throw new CatchUpException($"{from} is not older than {to}");
        return [.. Versions.Skip(top.i).Take(bottom.i - top.i)];
    }

    private static ChangelogItem MakeItem(string version, string text)
    {
        text = Spaces().Replace(text, " ").Trim();
        var cves = Cve().Matches(text).Select(m => m.Value).Distinct(StringComparer.Ordinal).ToList();
        var subject = text;
        var architectures = new List<string>();
        while (ArchitectureTag().Match(subject) is { Success: true } tag)
        {
            architectures.AddRange(
                tag.Groups["archs"].Value.Split(new[] { ',', ' ' }, StringSplitOptions.RemoveEmptyEntries));
            subject = subject[tag.Length..].TrimStart();
        }
        // "(CVE-a, CVE-b)", "(CVE-a) (CVE-b)", "(Closes: #N)" anywhere, then what punctuation they leave behind.
        subject = Annotation().Replace(subject, " ");
        subject = TrailingBareCves().Replace(subject, "");
        subject = Spaces().Replace(subject, " ").Trim();
        while (subject.Length > 0 && subject[^1] is '.' or ':' or '*' or ' ' or ')'
            && (subject[^1] != ')' || subject.Count(c => c == ')') > subject.Count(c => c == '(')))
            subject = subject[..^1];
        return new ChangelogItem(version, subject, architectures, cves, text);
    }

    [GeneratedRegex(@"^(?<package>[a-z0-9][a-z0-9+.-]*) \((?<version>[^)]+)\) (?<distribution>[^;]+);")]
    private static partial Regex Header();

    [GeneratedRegex(@"CVE-\d{4}-\d{4,}")]
    private static partial Regex Cve();

    [GeneratedRegex(@"^\[(?<archs>[a-z0-9_, ]+)\]\s*")]
    private static partial Regex ArchitectureTag();

    [GeneratedRegex(@"\s*\((?:[^()]*\bCVE-\d{4}-\d{4,}|Closes:)[^()]*\)")]
    private static partial Regex Annotation();

    /// <summary>Older entries append the id without parentheses: "... use-after-free CVE-2022-42719".</summary>
    [GeneratedRegex(@"(\s+CVE-\d{4}-\d{4,}[,;).]*)+\s*$")]
    private static partial Regex TrailingBareCves();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();
}
