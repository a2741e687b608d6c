using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace Kintsugi.User.Build;

/// <summary>A Debian source package version, as <c>apt-get source</c> names it.</summary>
public sealed record SourcePackage(string Name, string Version)
{
    /// <summary>Parses <c>NAME=VERSION</c>.</summary>
    public static SourcePackage Parse(string text)
    {
        var equals = text.IndexOf('=');
        if (equals <= 0 || equals == text.Length - 1 || !Regex.IsMatch(text[..equals], "^[a-z0-9][a-z0-9.+-]+$")
            || !Regex.IsMatch(text[(equals + 1)..], "^[A-Za-z0-9.+~:-]+$"))
            throw new UserBuildException($"'{text}' is not PACKAGE=VERSION (for example postgresql-15=15.18-0+deb12u1)",
                ExitCode.Usage);
        return new SourcePackage(text[..equals], text[(equals + 1)..]);
    }

    public override string ToString() => $"{Name}={Version}";
}

/// <summary>
/// A source tree ready to build from: the exact source of a package version, unpacked, and the compiler flags its
/// Debian build used (dpkg-buildflags, with the <c>DEB_*</c> settings its <c>debian/rules</c> exports).
/// </summary>
/// <param name="DscSha256">SHA-256 of the source package's .dsc: the content key of the cached tree (the .dsc names
/// every tarball with its checksum).</param>
public sealed record
    PreparedSource(SourcePackage Package, string Tree, string DscSha256, IReadOnlyList<string> CompilerFlags);

/// <summary>
/// Obtains the exact source of a Debian package version itself: <c>apt-get source --download-only PACKAGE=VERSION</c>
/// through a private apt state in the cache (bookworm main with deb-src; the host's sources are never read or
/// changed), unpacked once with <c>dpkg-source -x</c> into a tree keyed by the .dsc's content, so a second fix to the
/// same package reuses the tree. The same private apt state serves bench/user/postgresql/prepare.sh.
/// </summary>
public sealed class DebianSource(string cacheRoot, Action<string>? progress = null)
{
    /// <summary>The cache root: <c>KINTSUGI_CACHE</c>, or /var/cache/kintsugi.</summary>
    public static string DefaultCacheRoot => Environment.GetEnvironmentVariable(
        "KINTSUGI_CACHE") is { Length: > 0 } configured ? configured : "/var/cache/kintsugi";

    /// <summary>Package lists older than this are fetched again before a version is looked up.</summary>
    public static readonly TimeSpan ListsLifetime = TimeSpan.FromDays(1);

    private string AptDirectory => Path.Combine(cacheRoot, "user", "apt");

    private IReadOnlyList<string> AptOptions =>
    [
        "-o", $"Dir::Etc::SourceList={AptDirectory}/sources.list", "-o",
        $"Dir::Etc::SourceParts={AptDirectory}/sources.list.d",
        "-o", $"Dir::State={AptDirectory}", "-o", $"Dir::State::Lists={AptDirectory}/lists", "-o",
        $"Dir::State::status={AptDirectory}/status",
        "-o", $"Dir::Cache={AptDirectory}/cache", "-o", "Dir::Etc::Preferences=/dev/null", "-o",
        $"Dir::Etc::PreferencesParts={AptDirectory}/preferences.d",
        "-o", "APT::Architectures=amd64", "-o", "Acquire::Languages=none", "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false", "-o",
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
        "-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
        "-o", "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false", "-o",
        "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
    ];

    /// <summary>Fetches (once) and unpacks (once per content) the source of <paramref name="package"/>, and reads its
    /// build flags.</summary>
    public async Task<PreparedSource> PrepareAsync(SourcePackage package, CancellationToken cancellation = default) =>
        await UnpackAsync(package, await FetchAsync(package, cancellation), cancellation);

    /// <summary>Fetches (once) the source package of <paramref name="package"/>; returns its .dsc, the files it names
    /// beside it.</summary>
    public async Task<string> FetchAsync(SourcePackage package, CancellationToken cancellation = default)
    {
        var download =
            Path.Combine(cacheRoot, "user", "sources", $"{package.Name}_{package.Version.Replace(':', '%')}");
        Directory.CreateDirectory(download);
        string dsc;
        using (await FileLock.AcquireAsync(Path.Combine(download, ".lock"), cancellation))
        {
            dsc = Directory.GetFiles(download, "*.dsc").SingleOrDefault()
                ?? await DownloadAsync(package, download, cancellation);
        }
        return dsc;
    }

    /// <summary>
    /// A source package obtained elsewhere (its .dsc with the files it names beside it: a local mirror, an air-gapped
    /// copy, the security suite's source fetched by hand), unpacked (once per content, like a fetched one; dpkg-source
    /// checks every file against the .dsc's checksums) and its build flags read.
    /// </summary>
    public async Task<PreparedSource> PrepareLocalAsync(string dscPath, CancellationToken cancellation = default)
    {
        if (!File.Exists(dscPath)) throw new UserBuildException($"{dscPath} does not exist", ExitCode.NotFound);
        var fields = await File.ReadAllTextAsync(dscPath, cancellation);
        var name = Regex.Match(fields, @"^Source:\s*(\S+)\s*$", RegexOptions.Multiline);
        var version = Regex.Match(fields, @"^Version:\s*(\S+)\s*$", RegexOptions.Multiline);
        if (!name.Success || !version.Success)
            throw new UserBuildException($"{dscPath} is not a Debian source control file (.dsc): it has no Source " +
                "or Version field", ExitCode.InputRefused);
        return await UnpackAsync(SourcePackage.Parse($"{name.Groups[1].Value}={version.Groups[1].Value}"),
            Path.GetFullPath(dscPath), cancellation);
    }

    private async Task<PreparedSource> UnpackAsync(SourcePackage package, string dsc, CancellationToken cancellation)
    {
        var key = Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(dsc, cancellation)));
        var entry = Path.Combine(cacheRoot, "user", "trees", key);
        var tree = Path.Combine(entry, "tree");
        Directory.CreateDirectory(entry);
        using (await FileLock.AcquireAsync(Path.Combine(entry, ".lock"), cancellation))
        {
            if (!File.Exists(Path.Combine(entry, ".prepared")))
            {
                progress?.Invoke($"unpacking {package} into {tree}");
                if (Directory.Exists(tree)) Directory.Delete(tree, recursive: true);
                File.Delete(Path.Combine(entry, ".configured"));
                var unpacked = await ExternalCommand.RunAsync("dpkg-source", ["--no-check", "-x", dsc, tree], entry,
                    cancellation: cancellation);
                if (!unpacked.Succeeded) throw new UserBuildException($"dpkg-source -x {dsc} failed: " +
                    $"{unpacked.StandardError.Trim()}", ExitCode.Environment);
                await File.WriteAllTextAsync(Path.Combine(entry, ".prepared"), $"{package}\n", cancellation);
            }
        }
        return new PreparedSource(package, tree, key, await BuildFlagsAsync(tree, cancellation));
    }

    /// <summary>
    /// A binary package of bookworm main or bookworm-security at an exact version, downloaded (once) through the
    /// private apt state and unpacked into its own root in the cache: the shipped objects of a version that is not
    /// installed here.
    /// </summary>
    /// <returns>The root the package is unpacked into (its files under their installed paths).</returns>
    public async Task<string> UnpackBinaryAsync(SourcePackage binary, CancellationToken cancellation = default)
    {
        var entry = Path.Combine(cacheRoot, "user", "binaries", $"{binary.Name}_{binary.Version.Replace(':', '%')}");
        var root = Path.Combine(entry, "root");
        Directory.CreateDirectory(entry);
        using (await FileLock.AcquireAsync(Path.Combine(entry, ".lock"), cancellation))
        {
            if (File.Exists(Path.Combine(entry, ".unpacked"))) return root;
            using (await FileLock.AcquireAsync(Path.Combine(cacheRoot, "user", "apt.lock"), cancellation))
            {
                await EnsureListsAsync(cancellation);
            }
            progress?.Invoke($"downloading {binary} (apt-get download, private apt state in {AptDirectory})");
            foreach (var stale in Directory.GetFiles(entry, "*.deb")) File.Delete(stale);
            var fetched = await ExternalCommand.RunAsync("apt-get",
                [.. AptOptions, "-q", "download", binary.ToString()], entry, cancellation: cancellation);
            var deb = Directory.GetFiles(entry, "*.deb").SingleOrDefault();
            if (!fetched.Succeeded || deb is null)
                throw new UserBuildException($"apt-get download {binary} failed: {fetched.StandardError.Trim()} (is " +
                    $"{binary.Version} a version in bookworm main or bookworm-security?)", ExitCode.NotFound);
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
            var unpacked = await ExternalCommand.RunAsync("dpkg-deb", ["-x", deb, root], entry,
                cancellation: cancellation);
            if (!unpacked.Succeeded) throw new UserBuildException($"dpkg-deb -x {deb} failed: " +
                $"{unpacked.StandardError.Trim()}", ExitCode.Environment);
            await File.WriteAllTextAsync(Path.Combine(entry, ".unpacked"), $"{binary}\n", cancellation);
            return root;
        }
    }

    private async Task<string> DownloadAsync(SourcePackage package, string directory, CancellationToken cancellation)
    {
        using (await FileLock.AcquireAsync(Path.Combine(cacheRoot, "user", "apt.lock"), cancellation))
        {
            await EnsureListsAsync(cancellation);
        }
        progress?.Invoke($"downloading the source of {package} (apt-get source, private apt state in {AptDirectory})");
        var fetched = await ExternalCommand.RunAsync("apt-get",
            [.. AptOptions, "-q", "source", "--download-only", package.ToString()], directory,
            cancellation: cancellation);
        var dsc = Directory.GetFiles(directory, "*.dsc").SingleOrDefault();
        if (!fetched.Succeeded || dsc is null)
            throw new UserBuildException($"apt-get source {package} failed: {fetched.StandardError.Trim()} (is " +
                $"{package.Version} the version in bookworm main? " +
                "sources of the security suite do not download: give --source with a tree you obtained)",
                ExitCode.NotFound);
        return dsc;
    }

    private async Task EnsureListsAsync(CancellationToken cancellation)
    {
        foreach (var sub in new[] { "lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d" })
            Directory.CreateDirectory(Path.Combine(AptDirectory, sub));
        var status = Path.Combine(AptDirectory, "status");
        if (!File.Exists(status)) await File.WriteAllTextAsync(status, "", cancellation);
        var sources = Path.Combine(AptDirectory, "sources.list");
        if (!File.Exists(sources))
            await File.WriteAllTextAsync(sources,
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian " +
                "bookworm main\n" +
                "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian " +
                "bookworm main\n", cancellation);
        // The security suite's binaries: the shipped objects of a security update (its sources do not download
        // here). Added beside a private state made before it was, whose lists are then fetched again.
        var security = Path.Combine(AptDirectory, "sources.list.d", "bookworm-security.list");
        var added = !File.Exists(security);
        if (added)
            await File.WriteAllTextAsync(security,
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://security.debian.org/" +
                "debian-security bookworm-security main\n", cancellation);
        var lists = Directory.GetFiles(Path.Combine(AptDirectory, "lists"), "*Sources*");
        if (!added && lists.Length > 0
            && lists.All(l => DateTime.UtcNow - File.GetLastWriteTimeUtc(l) < ListsLifetime)) return;
        progress?.Invoke("updating the private package lists (bookworm main with sources, bookworm-security)");
        var updated =
            await ExternalCommand.RunAsync("apt-get", [.. AptOptions, "-qq", "update"], cancellation: cancellation);
        if (!updated.Succeeded) throw new UserBuildException($"apt-get update (private state {AptDirectory}) failed: " +
            $"{updated.StandardError.Trim()}", ExitCode.Environment);
    }

    /// <summary>
    /// The C compiler flags the package's Debian build used: dpkg-buildflags' CPPFLAGS and CFLAGS, evaluated with the
    /// <c>DEB_*</c> variables its <c>debian/rules</c> sets (<c>DEB_BUILD_MAINT_OPTIONS = hardening=+all</c>,
    /// <c>DEB_CFLAGS_MAINT_APPEND = -Wall</c>, ...), run in the tree as the build runs it (so the file-prefix map names
    /// the tree).
    /// </summary>
    public static async Task<IReadOnlyList<string>>
        BuildFlagsAsync(string tree, CancellationToken cancellation = default)
    {
        var rules = Path.Combine(tree, "debian", "rules");
        var environment = File.Exists(rules) ? RulesSettings(await File.ReadAllTextAsync(rules, cancellation))
            : new Dictionary<string, string>();
        var flags = new List<string>();
        foreach (var name in new[] { "CPPFLAGS", "CFLAGS" })
        {
            var result = await ExternalCommand.RunAsync("dpkg-buildflags", ["--get", name], tree, environment,
                cancellation: cancellation);
            if (!result.Succeeded) throw new UserBuildException($"dpkg-buildflags --get {name} failed: " +
                $"{result.StandardError.Trim()}", ExitCode.Environment);
            flags.AddRange(result.StandardOutput.Split(' ',
                StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        }
        return flags;
    }

    /// <summary>
    /// The dpkg-buildflags settings a debian/rules makefile assigns (<c>[export] DEB_…[_MAINT]… (=|:=|?=|+=) value</c>,
    /// at the start of a line, continuation lines joined). Settings made inside conditionals or by included makefiles
    /// are not evaluated: those are the cases to give <c>--cflags</c> for.
    /// </summary>
    public static IReadOnlyDictionary<string, string> RulesSettings(string rules)
    {
        var settings = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in rules.Replace("\\\n", " ").Split('\n'))
        {
            var match = Regex.Match(line, @"^(?:export\s+)?(DEB_[A-Z_]+)\s*(\+=|:=|\?=|=)\s*(.*)$");
            if (!match.Success) continue;
            var (name, op, value) = (match.Groups[1].Value, match.Groups[2].Value, match.Groups[3].Value.Trim());
            if (!name.StartsWith("DEB_BUILD_MAINT_OPTIONS", StringComparison.Ordinal)
                && !Regex.IsMatch(name, "^DEB_[A-Z]+FLAGS_MAINT_(SET|STRIP|APPEND|PREPEND)$"))
                continue;
            settings[name] = op switch
            {
                "+=" when settings.TryGetValue(name, out var before) => $"{before} {value}",
                "?=" when settings.TryGetValue(name, out var kept) => kept,
                _ => value,
            };
        }
        return settings;
    }
}

/// <summary>An exclusive lock on a cache entry, across threads and processes.</summary>
internal sealed class FileLock : IDisposable
{
    private readonly FileStream _stream;
    private FileLock(FileStream stream) => _stream = stream;

    public static async Task<FileLock> AcquireAsync(string path, CancellationToken cancellation)
    {
        while (true)
        {
            try
            {
                return new FileLock(
                new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
            }
            catch (IOException) { await Task.Delay(200, cancellation); }
        }
    }

    public void Dispose() => _stream.Dispose();
}
