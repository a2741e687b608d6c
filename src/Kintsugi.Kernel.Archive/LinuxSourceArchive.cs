namespace Kintsugi.Kernel.Archive;

/// <summary>One version of a kernel line's source package, for example linux-source-6.1 6.1.187-1.</summary>
public sealed record LinuxSourceVersion(string Package, string Version)
{
    /// <summary>The source package of a kernel line: linux-source-MAJOR.MINOR.</summary>
    public static LinuxSourceVersion Of(KernelRelease release, string version)
    {
        var upstream = release.UpstreamVersion;
        return new LinuxSourceVersion($"linux-source-{upstream.Major}.{upstream.Minor}", version);
    }

    public override string ToString() => $"{Package} {Version}";
}

/// <summary>A linux-source package unpacked in the cache: the source tarball and Debian's changelog.</summary>
public sealed record FetchedLinuxSource(LinuxSourceVersion Source, string Tarball, string Changelog);

/// <summary>
/// Fetches linux-source packages of any version the archive carries (not only a kernel image's own), for
/// comparing two versions of one kernel line. Unpacked under <c>CACHE/sources/PACKAGE_VERSION/</c>; a
/// stamp written last marks a complete unpacking, so an interrupted one is redone.
/// </summary>
public sealed class LinuxSourceArchive(string cacheRoot, Action<string>? progress = null)
{
    private readonly Action<string> _progress = progress ?? (_ => { });

    public async Task<FetchedLinuxSource>
        FetchAsync(LinuxSourceVersion source, CancellationToken cancellation = default)
    {
        var sources = Path.Combine(cacheRoot, "sources");
        var directory = Path.Combine(sources, $"{source.Package}_{source.Version}");
        Directory.CreateDirectory(directory);
        using var cacheLock = await CacheLock.AcquireAsync(Path.Combine(directory, ".lock"), cancellation);
        var stamp = Path.Combine(directory, ".unpacked");
        var root = Path.Combine(directory, "root");
        if (!File.Exists(stamp))
        {
            // Looked up in every release's private apt state (Debian 11, 12, 13), never the host's sources.
            ReleaseApt? apt = null;
            AptPackage? package = null;
            foreach (var release in DebianRelease.All)
            {
                apt = new ReleaseApt(release, cacheRoot);
                await apt.EnsureListsAsync(ReleaseApt.MaxListAge, _progress, cancellation);
                package = await apt.ResolveAsync(source.Package, source.Version, cancellation);
                if (package is not null) break;
            }
            if (package is null || apt is null)
                throw new KernelArchiveException(
                    $"{source.Package} {source.Version} is not in the archive of " +
                    $"{string.Join(", ", DebianRelease.All)}; the versions they have: kintsugi kernel list-available",
                    ExitCode.NotFound);
            var debs = Path.Combine(sources, "debs");
            Directory.CreateDirectory(debs);
            _progress($"downloading {package.Name} {package.Version}");
            var deb = await apt.DownloadAsync(package, debs, cancellation);
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
            _progress($"unpacking {Path.GetFileName(deb)}");
            await Apt.ExtractAsync(deb, root, cancellation);
            await File.WriteAllTextAsync(stamp, $"{package.Name}={package.Version}\n", cancellation);
        }
        var tarball = Directory.Exists(Path.Combine(root, "usr", "src"))
            ? Directory.GetFiles(Path.Combine(root, "usr", "src"), "linux-source-*.tar.*").FirstOrDefault() : null;
        var changelog = Path.Combine(root, "usr", "share", "doc", source.Package, "changelog.Debian.gz");
        if (tarball is null || !File.Exists(changelog))
            throw new KernelArchiveException($"{source} has no source tarball or no changelog.Debian.gz under {root}",
                ExitCode.InternalError);
        return new FetchedLinuxSource(source, tarball, changelog);
    }

    /// <summary>The source of a kernel the archive provider has already fetched with its source.</summary>
    public static FetchedLinuxSource OfKernel(FetchedKernel kernel)
    {
        var tarball = kernel.SourceTarball
            ?? throw new KernelArchiveException($"kernel {kernel.Target.Release} was fetched without its source",
            ExitCode.InternalError);
        var source = LinuxSourceVersion.Of(kernel.Target.Release, kernel.Target.PackageVersion
            ?? throw new KernelArchiveException($"kernel {kernel.Target.Release} has no package version",
            ExitCode.InternalError));
        return new FetchedLinuxSource(source, tarball,
            Path.Combine(kernel.Root, "usr", "share", "doc", source.Package, "changelog.Debian.gz"));
    }
}
