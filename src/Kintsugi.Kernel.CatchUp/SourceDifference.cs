using System.Diagnostics;
using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>One file that differs between the two source versions, with its own patch (against the tree's
/// root).</summary>
/// <param name="Patch">The per-file patch, relative to the difference's directory; null for a binary file.</param>
/// <param name="Functions">The functions whose text changed, was added or removed (C files and headers).</param>
public sealed record ChangedFile(string Path, FileChangeKind Kind, string? Patch, string? PatchSha256, int LinesAdded,
    int LinesRemoved, IReadOnlyList<string> Functions, IReadOnlyList<string> Constructs);

/// <summary>
/// The difference between two versions of a kernel line's linux-source, split into one patch per changed
/// file, with the old and new text of each kept beside it (headers are classified from them). Computed once
/// per pair of versions and cached: a manifest written last marks a complete difference.
/// </summary>
public sealed partial record SourceDifference(LinuxSourceVersion From, LinuxSourceVersion To, string Directory,
    IReadOnlyList<ChangedFile> Files)
{
    public const int FormatVersion = 1;

    public string OldText(ChangedFile file) => System.IO.Path.Combine(Directory, "a", file.Path);
    public string NewText(ChangedFile file) => System.IO.Path.Combine(Directory, "b", file.Path);
    public string PatchPath(ChangedFile file) => System.IO.Path.Combine(Directory,
        file.Patch ?? throw new InvalidOperationException($"{file.Path} has no patch"));

    public string? ReadOld(ChangedFile file) => File.Exists(OldText(file)) ? File.ReadAllText(OldText(file)) : null;
    public string? ReadNew(ChangedFile file) => File.Exists(NewText(file)) ? File.ReadAllText(NewText(file)) : null;

    /// <summary>The identifiers on the added and removed lines of a file's patch (none for a binary file).</summary>
    public IReadOnlySet<string> IdentifiersOnChangedLines(ChangedFile file) => file.Patch is null
        ? new HashSet<string>()
        : File.ReadLines(PatchPath(file))
            .Where(line => line.Length > 0 && line[0] is '+' or '-' && !line.StartsWith("+++", StringComparison.Ordinal)
                && !line.StartsWith("---", StringComparison.Ordinal))
            .SelectMany(line => Identifier().Matches(line).Select(m => m.Value)).ToHashSet(StringComparer.Ordinal);

    [System.Text.RegularExpressions.GeneratedRegex("[A-Za-z_][A-Za-z0-9_]*")]
    private static partial System.Text.RegularExpressions.Regex Identifier();

    public static string CacheDirectory(string cacheRoot, LinuxSourceVersion from, LinuxSourceVersion to) =>
        System.IO.Path.Combine(cacheRoot, "catchup", "differences", $"{from.Package}_{from.Version}..{to.Version}");

    /// <summary>The cached difference, or computes it from the two tarballs (a few minutes: each is read
    /// twice).</summary>
    public static async Task<SourceDifference> ComputeAsync(FetchedLinuxSource from, FetchedLinuxSource to,
        string cacheRoot, Action<string> progress, CancellationToken cancellation = default)
    {
        if (from.Source.Package != to.Source.Package)
            throw new CatchUpException($"{from.Source} and {to.Source} are not the same kernel line");
        var directory = CacheDirectory(cacheRoot, from.Source, to.Source);
        System.IO.Directory.CreateDirectory(directory);
        using var cacheLock = await CacheLock.AcquireAsync(System.IO.Path.Combine(directory, ".lock"), cancellation);
        var manifestPath = System.IO.Path.Combine(directory, "difference.json");
        if (File.Exists(manifestPath))
        {
            var cached = JsonSerializer.Deserialize(await File.ReadAllBytesAsync(manifestPath, cancellation),
                CatchUpJson.Default.CachedDifference);
            if (cached is { Format: FormatVersion })
                return new SourceDifference(from.Source, to.Source, directory, cached.Files);
        }
        foreach (var part in new[] { "a", "b", "patches" })
            if (System.IO.Directory.Exists(System.IO.Path.Combine(directory, part)))
                System.IO.Directory.Delete(System.IO.Path.Combine(directory, part), recursive: true);

        progress($"comparing {from.Source} with {to.Source}: reading {System.IO.Path.GetFileName(from.Tarball)}");
        var oldHashes = await HashAsync(from.Tarball, cancellation);
        progress($"reading {to.Source}");
        var newHashes = await HashAsync(to.Tarball, cancellation);
        var changed = newHashes.Where(kv => !oldHashes.TryGetValue(kv.Key, out var old) || old != kv.Value)
            .Select(kv => kv.Key)
            .Concat(oldHashes.Keys.Where(k => !newHashes.ContainsKey(k))).ToHashSet(StringComparer.Ordinal);
        progress($"{changed.Count} file(s) differ; extracting them");
        await ExtractAsync(from.Tarball, changed, System.IO.Path.Combine(directory, "a"), cancellation);
        await ExtractAsync(to.Tarball, changed, System.IO.Path.Combine(directory, "b"), cancellation);

        var files = await SplitEachAsync(directory, changed, oldHashes.ContainsKey, newHashes.ContainsKey,
            cancellation);
        var manifest = new CachedDifference(FormatVersion, from.Source.ToString(), to.Source.ToString(), files);
        AtomicFile.Write(manifestPath,
            JsonSerializer.SerializeToUtf8Bytes(manifest, CatchUpJson.Default.CachedDifference));
        return new SourceDifference(from.Source, to.Source, directory, files);
    }

    /// <summary>
    /// The difference of two trees already extracted under DIRECTORY/a and DIRECTORY/b (only the files that differ),
    /// split as <see cref="ComputeAsync"/> splits it; not cached.
    /// </summary>
    public static async Task<SourceDifference> OfExtractedAsync(LinuxSourceVersion from, LinuxSourceVersion to,
        string directory, CancellationToken cancellation = default)
    {
        string[] Relative(string side) => System.IO.Directory.Exists(System.IO.Path.Combine(directory, side))
            ? [.. System.IO.Directory.EnumerateFiles(System.IO.Path.Combine(directory, side), "*",
                SearchOption.AllDirectories)
                .Select(f => System.IO.Path.GetRelativePath(System.IO.Path.Combine(directory, side), f))]
            : [];
        var before = Relative("a").ToHashSet(StringComparer.Ordinal);
        var after = Relative("b").ToHashSet(StringComparer.Ordinal);
        var files = await SplitEachAsync(directory, before.Union(after), before.Contains, after.Contains, cancellation);
        return new SourceDifference(from, to, directory, files);
    }

    /// <summary>One fix per changed file, in path order (their patch files are numbered in that order).</summary>
    private static async Task<List<ChangedFile>> SplitEachAsync(string directory, IEnumerable<string> paths,
        Func<string, bool> existedBefore, Func<string, bool> existsAfter, CancellationToken cancellation)
    {
        System.IO.Directory.CreateDirectory(System.IO.Path.Combine(directory, "patches"));
        var files = new List<ChangedFile>();
        foreach (var path in paths.Order(StringComparer.Ordinal))
            files.Add(await SplitAsync(directory, path, existedBefore(path), existsAfter(path), files.Count + 1,
                cancellation));
        return files;
    }

    private static async Task<ChangedFile> SplitAsync(string directory, string path, bool existedBefore,
        bool existsAfter, int index, CancellationToken cancellation)
    {
        var kind = !existedBefore ? FileChangeKind.Added
            : !existsAfter ? FileChangeKind.Deleted : FileChangeKind.Modified;
        var before = existedBefore ? System.IO.Path.Combine("a", path) : "/dev/null";
        var after = existsAfter ? System.IO.Path.Combine("b", path) : "/dev/null";
        // -p names the enclosing C function in each hunk header, which is what a reader of the patch wants.
        var diff = await ExternalCommand.RunAsync("diff", ["-up", "--label", existedBefore ? $"a/{path}" : "/dev/null",
            "--label", existsAfter ? $"b/{path}" : "/dev/null", before, after], directory, cancellation: cancellation);
        if (diff.ExitCode is not (0 or 1))
            throw new CatchUpException($"diff of {path} failed: {diff.StandardError.Trim()}");
        var text = diff.StandardOutput;
        var functions = new List<string>();
        var constructs = new List<string>();
        if (path.EndsWith(".c", StringComparison.Ordinal) || path.EndsWith(".h", StringComparison.Ordinal))
        {
            var changes = SourceChange.Compare(existedBefore
                ? await File.ReadAllTextAsync(System.IO.Path.Combine(directory, before), cancellation) : null,
                existsAfter ? await File.ReadAllTextAsync(System.IO.Path.Combine(directory, after), cancellation)
                : null);
            functions.AddRange(SourceChange.ChangedFunctions(changes));
            constructs.AddRange(changes.Select(c => c.Name).Distinct().Order(StringComparer.Ordinal));
        }
        if (text.StartsWith("Binary files", StringComparison.Ordinal)
            || !text.Contains("\n@@ ", StringComparison.Ordinal))
            return new ChangedFile(path, kind, null, null, 0, 0, functions, constructs);
        var patchFile = System.IO.Path.Combine("patches", $"{index:D4}-{path.Replace('/', '_')}.patch");
        await File.WriteAllTextAsync(System.IO.Path.Combine(directory, patchFile), text, cancellation);
        var parsed = SourcePatch.Parse(System.IO.Path.GetFileName(patchFile), text);
        var change = parsed.Files.Single();
        return new ChangedFile(path, kind, patchFile, parsed.Sha256, change.LinesAdded, change.LinesRemoved, functions,
            constructs);
    }

    /// <summary>Path in the tree → sha256 of the content (regular files) or of the link target (symbolic
    /// links).</summary>
    private static async Task<Dictionary<string, string>> HashAsync(string tarball, CancellationToken cancellation)
    {
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        await ReadTarAsync(tarball, async (path, entry) =>
        {
            if (entry.EntryType is TarEntryType.SymbolicLink)
                hashes[path] = "link:" + entry.LinkName;
            else if (entry.DataStream is { } data)
                hashes[path] = Convert.ToHexStringLower(await SHA256.HashDataAsync(data, cancellation));
        }, cancellation);
        return hashes;
    }

    private static async Task ExtractAsync(string tarball, IReadOnlySet<string> paths, string destination,
        CancellationToken cancellation)
    {
        await ReadTarAsync(tarball, async (path, entry) =>
        {
            if (!paths.Contains(path) || entry.DataStream is not { } data) return;
            var target = System.IO.Path.Combine(destination, path);
            System.IO.Directory.CreateDirectory(System.IO.Path.GetDirectoryName(target)!);
            await using var file = File.Create(target);
            await data.CopyToAsync(file, cancellation);
        }, cancellation);
    }

    /// <summary>Streams a compressed tarball through the matching decompressor, visiting regular files and links with
    /// the top directory removed.</summary>
    internal static async Task ReadTarAsync(string tarball, Func<string, TarEntry, Task> visit,
        CancellationToken cancellation)
    {
        var decompressor = tarball.EndsWith(".xz", StringComparison.Ordinal) ? "xz"
            : tarball.EndsWith(".zst", StringComparison.Ordinal) ? "zstd"
            : tarball.EndsWith(".gz", StringComparison.Ordinal) ? "gzip"
            : tarball.EndsWith(".bz2", StringComparison.Ordinal) ? "bzip2"
            : throw new CatchUpException($"{tarball}: unknown compression");
        var start = new ProcessStartInfo(decompressor)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false
        };
        foreach (var argument in new[] { "-dc", tarball }) start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new CatchUpException($"cannot start {decompressor}");
        var errors = process.StandardError.ReadToEndAsync(cancellation);
        try
        {
            await using var reader = new TarReader(process.StandardOutput.BaseStream);
            while (await reader.GetNextEntryAsync(copyData: false, cancellation) is { } entry)
            {
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile
                    or TarEntryType.SymbolicLink)) continue;
                var slash = entry.Name.IndexOf('/');
                if (slash < 0) continue;
                await visit(entry.Name[(slash + 1)..], entry);
            }
            await process.StandardOutput.BaseStream.CopyToAsync(Stream.Null, cancellation);
            await process.WaitForExitAsync(cancellation);
        }
        catch (Exception e) when (e is EndOfStreamException or InvalidDataException)
        {
            // The decompressor stopped before the end: killed (an interrupt reaches the whole process group, so it
            // may stop before this process sees its cancellation) or the tarball is damaged.
            await process.WaitForExitAsync(CancellationToken.None);
            cancellation.ThrowIfCancellationRequested();
            var said = (await errors).Trim();
            throw process.ExitCode > 128
                ? new CatchUpException($"{decompressor} was stopped by a signal while reading {tarball}: run the " +
                    "same command again", ExitCode.Environment, e)
                : new CatchUpException($"{tarball} is damaged ({e.Message}" + (said.Length > 0 ? $"; {said}" : "") +
                    "): delete it and run the same command again to download it afresh", ExitCode.InputRefused, e);
        }
        catch
        {
            if (!process.HasExited) process.Kill();
            throw;
        }
        if (process.ExitCode != 0)
            throw new CatchUpException($"{decompressor} -dc {tarball} failed: {(await errors).Trim()}");
    }
}

/// <summary>difference.json: the split difference as cached.</summary>
public sealed record CachedDifference(int Format, string From, string To, IReadOnlyList<ChangedFile> Files);
