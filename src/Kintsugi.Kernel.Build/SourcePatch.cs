using System.Security.Cryptography;
using System.Text;

namespace Kintsugi.Kernel.Build;

/// <summary>How a patch changes one file.</summary>
public enum FileChangeKind { Modified, Added, Deleted, Renamed }

/// <summary>One file of a patch, with its path inside the kernel tree (the leading a/ or src/ component
/// removed).</summary>
public sealed record FileChange(string Path, string? OldPath, FileChangeKind Kind, int LinesAdded, int LinesRemoved);

/// <summary>
/// A kernel source fix, parsed from a unified diff (<c>diff -u</c>, <c>diff -Nupr</c>) or a
/// <c>git format-patch</c> mail. Parsing checks every hunk's line counts, so a truncated or hand-damaged
/// patch is refused here rather than half-applied later.
/// </summary>
public sealed class SourcePatch
{
    public string Name { get; }
    public string Sha256 { get; }
    public string? Subject { get; }
    public IReadOnlyList<FileChange> Files { get; }
    public string Text { get; }

    private SourcePatch(string name, string sha256, string? subject, IReadOnlyList<FileChange> files, string text)
    {
        Name = name;
        Sha256 = sha256;
        Subject = subject;
        Files = files;
        Text = text;
    }

    public static SourcePatch Read(string path)
    {
        try { return Parse(System.IO.Path.GetFileName(path), File.ReadAllText(path)); }
        catch (IOException e) { throw new SourcePatchException($"cannot read {path}: {e.Message}", e); }
    }

    public static SourcePatch Parse(string name, string text)
    {
        text = text.Replace("\r\n", "\n");
        var lines = text.Split('\n');
        var files = new List<FileChange>();
        string? subject = null;
        for (var i = 0; i < lines.Length; i++)
        {
            var line = lines[i];
            if (subject is null && line.StartsWith("Subject: ", StringComparison.Ordinal))
                subject = line["Subject: ".Length..].Trim();
            if (!line.StartsWith("--- ", StringComparison.Ordinal) || i + 1 >= lines.Length
                || !lines[i + 1].StartsWith("+++ ", StringComparison.Ordinal))
                continue;
            var oldPath = PathOf(lines[i][4..]);
            var newPath = PathOf(lines[i + 1][4..]);
            i += 2;
            var (added, removed, next) = ReadHunks(lines, i, name, newPath ?? oldPath ?? "?");
            i = next - 1;
            var kind = oldPath is null ? FileChangeKind.Added : newPath is null ? FileChangeKind.Deleted
                : oldPath != newPath ? FileChangeKind.Renamed : FileChangeKind.Modified;
            files.Add(new FileChange((newPath ?? oldPath)!, kind == FileChangeKind.Renamed ? oldPath : null, kind,
                added, removed));
        }
        if (files.Count == 0)
            throw new SourcePatchException(
                $"{name} is not a patch: it has no '--- a/FILE' / '+++ b/FILE' file headers");
        var sha = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
        return new SourcePatch(name, sha, subject, files, text);
    }

    private static (int Added, int Removed, int Next) ReadHunks(string[] lines, int i, string name, string file)
    {
        int added = 0, removed = 0;
        if (i >= lines.Length || !lines[i].StartsWith("@@ ", StringComparison.Ordinal))
            throw new SourcePatchException($"{name}, line {i + 1}: {file} has a file header but no hunk");
        while (i < lines.Length && lines[i].StartsWith("@@ ", StringComparison.Ordinal))
        {
            var header = i;
            var (oldCount, newCount) = HunkCounts(lines[i], name, i);
            i++;
            while (oldCount > 0 || newCount > 0)
            {
                if (i >= lines.Length)
                    throw new SourcePatchException(
                        $"{name}: the hunk at line {header + 1} of {file} ends early (the patch is truncated)");
                var line = lines[i];
                if (line.StartsWith('\\')) { i++; continue; } // "\ No newline at end of file"
                switch (line.Length == 0 ? ' ' : line[0])
                {
                    case ' ': oldCount--; newCount--; break;
                    case '-': oldCount--; removed++; break;
                    case '+': newCount--; added++; break;
                    default:
                        throw new SourcePatchException(
                            $"{name}, line {i + 1}: the hunk at line {header + 1} of {file} has fewer lines than its " +
                            $"header says (damaged or hand-edited patch)");
                }
                if (oldCount < 0 || newCount < 0)
                    throw new SourcePatchException($"{name}, line {i + 1}: the hunk at line {header + 1} of {file} " +
                        $"has more lines than its header says");
                i++;
            }
            while (i < lines.Length && lines[i].StartsWith('\\')) i++;
        }
        if (i < lines.Length && IsStrayHunkLine(lines, i))
            throw new SourcePatchException($"{name}, line {i + 1}: a hunk of {file} has more lines than its header " +
                $"says (damaged or hand-edited patch)");
        return (added, removed, i);
    }

    /// <summary>A +/- line right after a file's last hunk, other than the next file's header or a mail
    /// signature.</summary>
    private static bool IsStrayHunkLine(string[] lines, int i)
    {
        var line = lines[i];
        if (line.StartsWith('+')) return !line.StartsWith("+++ ", StringComparison.Ordinal);
        if (!line.StartsWith('-') || line is "--" or "-- ") return false;
        return !(line.StartsWith("--- ", StringComparison.Ordinal) && i + 1 < lines.Length
            && lines[i + 1].StartsWith("+++ ", StringComparison.Ordinal));
    }

    private static (int Old, int New) HunkCounts(string header, string name, int index)
    {
        // @@ -start[,count] +start[,count] @@ context
        var parts = header.Split(' ');
        if (parts.Length < 4 || parts[3] != "@@" && !parts[3].StartsWith("@@", StringComparison.Ordinal)
            || !parts[1].StartsWith('-') || !parts[2].StartsWith('+'))
            throw new SourcePatchException($"{name}, line {index + 1}: malformed hunk header '{header}'");
        return (Count(parts[1][1..]), Count(parts[2][1..]));

        int Count(string range)
        {
            var comma = range.IndexOf(',');
            var text = comma < 0 ? "1" : range[(comma + 1)..];
            return int.TryParse(text, out var count) && count >= 0 && count < 10_000_000 ? count
                : throw new SourcePatchException($"{name}, line {index + 1}: malformed hunk range '{range}'");
        }
    }

    /// <summary>The tree path of a ---/+++ header: timestamp dropped, first component (a/, b/, src.orig/) removed like
    /// patch -p1; null for /dev/null.</summary>
    private static string? PathOf(string header)
    {
        var path = header.Split('\t')[0].Trim();
        if (path == "/dev/null") return null;
        var slash = path.IndexOf('/');
        var stripped = slash < 0 ? path : path[(slash + 1)..];
        if (stripped.Length == 0 || stripped.StartsWith('/') || stripped.Split('/').Contains(".."))
            throw new SourcePatchException($"'{path}' is not a path inside the kernel tree");
        return stripped;
    }
}

/// <summary>A source patch is malformed, or changes what cannot be live patched.</summary>
public sealed class SourcePatchException(string message, Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.InputRefused;
}
