namespace Kintsugi.Kernel.Archive;

internal sealed record AptDependency(string Name, string? Relation, string? Version);

internal sealed record
    AptPackage(string Name, string Version, string Architecture, IReadOnlyList<AptDependency> Depends);

/// <summary>The apt and dpkg commands the archive provider delegates to.</summary>
internal static class Apt
{
    /// <summary>Finds a package in apt's lists: the given version, or the candidate when null. Null when
    /// absent.</summary>
    public static async Task<AptPackage?>
        ResolveAsync(IReadOnlyList<string> options, string name, string? version, CancellationToken cancellation)
    {
        var result = await ExternalCommand.RunAsync("apt-cache",
            [.. options, "show", version is null ? name : $"{name}={version}"], cancellation: cancellation);
        if (!result.Succeeded) return null;
        // apt-cache show prints one stanza per version, the candidate first.
        var stanza = result.StandardOutput.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
        if (stanza is null) return null;
        var fields = ParseStanza(stanza);
        if (!fields.TryGetValue("Version", out var found) || !fields.TryGetValue("Package", out var package))
            return null;
        return new AptPackage(package, found, fields.GetValueOrDefault("Architecture", "amd64"),
            ParseDepends(fields.GetValueOrDefault("Depends", "")));
    }

    public static async Task<string> DownloadAsync(IReadOnlyList<string> options, AptPackage package, string directory,
        CancellationToken cancellation)
    {
        var existing = Directory.GetFiles(directory, $"{package.Name}_*.deb")
            .FirstOrDefault(f => DebVersion(f) == package.Version);
        if (existing is not null) return existing;
        var result = await ExternalCommand.RunAsync("apt-get",
            [.. options, "-q", "-o", "APT::Sandbox::User=root", "download", $"{package.Name}={package.Version}"],
            directory, cancellation: cancellation);
        if (!result.Succeeded)
            throw new KernelArchiveException($"apt-get download {package.Name}={package.Version} failed: " +
                $"{result.StandardError.Trim()}", ExitCode.Environment);
        var deb =
            Directory.GetFiles(directory, $"{package.Name}_*.deb").FirstOrDefault(f => DebVersion(f) == package.Version)
            ?? throw new KernelArchiveException($"apt-get download {package.Name} produced no .deb",
            ExitCode.InternalError);
        var control =
            await ExternalCommand.RunAsync("dpkg-deb", ["-f", deb, "Package", "Version"], cancellation: cancellation);
        var fields = ParseStanza(control.StandardOutput);
        if (fields.GetValueOrDefault("Package") != package.Name
            || fields.GetValueOrDefault("Version") != package.Version)
            throw new KernelArchiveException($"{deb} is {fields.GetValueOrDefault("Package")} " +
                $"{fields.GetValueOrDefault("Version")}, not {package.Name} {package.Version}", ExitCode.InternalError);
        return deb;
    }

    public static async Task ExtractAsync(string deb, string root, CancellationToken cancellation)
    {
        Directory.CreateDirectory(root);
        var result = await ExternalCommand.RunAsync("dpkg-deb", ["-x", deb, root], cancellation: cancellation);
        if (!result.Succeeded) throw new KernelArchiveException($"dpkg-deb -x {deb} failed: " +
            $"{result.StandardError.Trim()}", ExitCode.Environment);
    }

    private static string? DebVersion(string path)
    {
        // name_version_arch.deb, with ':' of an epoch encoded as %3a
        var parts = Path.GetFileNameWithoutExtension(path).Split('_');
        return parts.Length == 3 ? Uri.UnescapeDataString(parts[1]) : null;
    }

    internal static Dictionary<string, string> ParseStanza(string stanza)
    {
        var fields = new Dictionary<string, string>();
        string? last = null;
        foreach (var line in stanza.Split('\n'))
        {
            if (line.StartsWith(' ') && last is not null) { fields[last] += "\n" + line.Trim(); continue; }
            var colon = line.IndexOf(':');
            if (colon <= 0) continue;
            last = line[..colon];
            fields[last] = line[(colon + 1)..].Trim();
        }
        return fields;
    }

    internal static List<AptDependency> ParseDepends(string depends) =>
        depends.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(alternatives => alternatives.Split('|')[0].Trim())
            .Select(d =>
            {
                var open = d.IndexOf('(');
                if (open < 0) return new AptDependency(d.Trim(), null, null);
                var inner = d[(open + 1)..d.IndexOf(')')].Trim().Split(' ', 2);
                return new AptDependency(d[..open].Trim(), inner[0], inner.Length > 1 ? inner[1].Trim() : null);
            }).ToList();
}

/// <summary>An exclusive lock on a cache entry, across threads and processes (tests fetch and prepare in
/// parallel).</summary>
public sealed class CacheLock : IDisposable
{
    private readonly FileStream _stream;
    private CacheLock(FileStream stream) => _stream = stream;

    public static async Task<CacheLock> AcquireAsync(string path, CancellationToken cancellation)
    {
        while (true)
        {
            try
            {
                return new CacheLock(
                new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
            }
            catch (IOException) { await Task.Delay(200, cancellation); }
        }
    }

    public void Dispose() => _stream.Dispose();
}
