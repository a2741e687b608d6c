namespace Kintsugi.Kernel.Archive;

/// <summary>
/// apt pointed at one Debian release through a private sources list and state directory in the cache
/// (<c>CACHE/apt/CODENAME</c>): the host's own sources, lists and package status are never read or changed,
/// so a Debian 12 host can fetch Debian 11 and 13 kernels and toolchains.
/// </summary>
public sealed class ReleaseApt
{
    /// <summary>Lists older than this are refreshed before a lookup (kernel ABIs appear with every security
    /// update).</summary>
    public static readonly TimeSpan MaxListAge = TimeSpan.FromHours(12);

    private readonly string _directory;

    public DebianRelease Release { get; }

    public ReleaseApt(DebianRelease release, string cacheRoot)
    {
        Release = release;
        _directory = Path.Combine(cacheRoot, "apt", release.Codename);
    }

    private string SourcesList => Path.Combine(_directory, "sources.list");
    private string Lists => Path.Combine(_directory, "lists");
    private string UpdatedStamp => Path.Combine(_directory, "updated");

    /// <summary>The options that make apt-get and apt-cache see only this release.</summary>
    public IReadOnlyList<string> Options =>
    [
        "-o", $"Dir::Etc::SourceList={SourcesList}",
        "-o", $"Dir::Etc::SourceParts={Path.Combine(_directory, "sources.list.d")}",
        "-o", $"Dir::State={_directory}",
        "-o", $"Dir::State::Lists={Lists}",
        "-o", $"Dir::State::status={Path.Combine(_directory, "status")}",
        "-o", $"Dir::Cache={Path.Combine(_directory, "cache")}",
        "-o", "Dir::Etc::Preferences=/dev/null",
        "-o", $"Dir::Etc::PreferencesParts={Path.Combine(_directory, "preferences.d")}",
        "-o", "APT::Architectures=amd64",
        "-o", "Acquire::Languages=none",
        // Only package lists: the host's configuration may also ask for AppStream and Contents indexes.
        "-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
        "-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
        "-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
        "-o", "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false",
        "-o", "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
    ];

    public DateTimeOffset? LastUpdated => File.Exists(UpdatedStamp) ? File.GetLastWriteTimeUtc(UpdatedStamp) : null;

    /// <summary>Makes sure the release's package lists are present and younger than <paramref
    /// name="maxAge"/>.</summary>
    public async Task EnsureListsAsync(TimeSpan maxAge, Action<string> progress, CancellationToken cancellation)
    {
        if (LastUpdated is { } fresh && DateTimeOffset.UtcNow - fresh < maxAge) return;
        Directory.CreateDirectory(_directory);
        using var updateLock = await CacheLock.AcquireAsync(Path.Combine(_directory, ".lock"), cancellation);
        if (LastUpdated is { } other && DateTimeOffset.UtcNow - other < maxAge) return; // another process just did it
        foreach (var directory in new[] { Path.Combine(Lists, "partial"),
        Path.Combine(_directory, "cache", "archives", "partial"),
                     Path.Combine(_directory, "sources.list.d"), Path.Combine(_directory, "preferences.d") })
            Directory.CreateDirectory(directory);
        if (!File.Exists(Path.Combine(_directory, "status")))
            await File.WriteAllTextAsync(Path.Combine(_directory, "status"), "", cancellation);
        await File.WriteAllTextAsync(SourcesList, string.Join('\n', Release.SourcesLines) + "\n", cancellation);
        progress($"updating the package lists of {Release} ({string.Join(", ", Release.Suites)})");
        var result = await ExternalCommand.RunAsync("apt-get",
            [.. Options, "-q", "-o", "APT::Sandbox::User=root", "update"], cancellation: cancellation);
        // apt-get update exits 0 even when a suite failed; its "W:"/"E:" lines say which.
        var failures = (result.StandardError + "\n" + result.StandardOutput).Split('\n')
            .Where(l => l.StartsWith("E:", StringComparison.Ordinal) || l.StartsWith("Err:", StringComparison.Ordinal))
            .ToList();
        if (!result.Succeeded || failures.Count > 0)
            throw new KernelArchiveException($"apt-get update for {Release} failed (is {DebianRelease.Mirror} " +
                $"reachable?):\n{string.Join('\n', failures.DefaultIfEmpty(result.StandardError.Trim()))}",
                ExitCode.Environment);
        await File.WriteAllTextAsync(UpdatedStamp, DateTimeOffset.UtcNow.ToString("O") + "\n", cancellation);
    }

    internal Task<AptPackage?> ResolveAsync(string name, string? version, CancellationToken cancellation) =>
        Apt.ResolveAsync(Options, name, version, cancellation);

    internal Task<string> DownloadAsync(AptPackage package, string directory, CancellationToken cancellation) =>
        Apt.DownloadAsync(Options, package, directory, cancellation);

    /// <summary>Downloads the candidate of a package and unpacks it (without its dependencies) under <paramref
    /// name="root"/>.</summary>
    public async Task UnpackAsync(string name, string root, CancellationToken cancellation)
    {
        await EnsureListsAsync(MaxListAge, _ => { }, cancellation);
        var package = await ResolveAsync(name, null, cancellation)
            ?? throw new KernelArchiveException($"{name} is not in the archive of {Release}");
        var debs = Path.Combine(_directory, "debs");
        Directory.CreateDirectory(debs);
        await Apt.ExtractAsync(await DownloadAsync(package, debs, cancellation), root, cancellation);
    }

    /// <summary>Package names matching an extended regular expression (<c>apt-cache search --names-only</c>).</summary>
    public async Task<IReadOnlyList<string>> SearchNamesAsync(string pattern, CancellationToken cancellation)
    {
        var result = await ExternalCommand.RunAsync("apt-cache", [.. Options, "search", "--names-only", pattern],
            cancellation: cancellation);
        if (!result.Succeeded) throw new KernelArchiveException($"apt-cache search failed for {Release}: " +
            $"{result.StandardError.Trim()}", ExitCode.Environment);
        return [.. result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(" - ", 2)[0].Trim()).Distinct().Order(StringComparer.Ordinal)];
    }

    /// <summary>Every version of each package in this release's suites, with the suite it comes from (<c>apt-cache
    /// madison</c>).</summary>
    public async Task<IReadOnlyList<(string Package, string Version,
        string Suite)>> VersionsAsync(IReadOnlyCollection<string> packages, CancellationToken cancellation)
    {
        if (packages.Count == 0) return [];
        var result = await ExternalCommand.RunAsync("apt-cache", [.. Options, "madison", .. packages],
            cancellation: cancellation);
        var versions = new List<(string, string, string)>();
        foreach (var line in result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "pkg | version | http://deb.debian.org/debian-security bullseye-security/main amd64 Packages"
            var fields = line.Split('|', StringSplitOptions.TrimEntries);
            if (fields.Length < 3 || !fields[2].EndsWith("Packages", StringComparison.Ordinal)) continue;
            var suite =
                fields[2].Split(' ', StringSplitOptions.RemoveEmptyEntries).ElementAtOrDefault(1)?.Split('/')[0] ?? "";
            versions.Add((fields[0], fields[1], suite));
        }
        return versions;
    }
}
