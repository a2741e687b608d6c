using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Kernel.Archive;

/// <summary>Parts of a distribution kernel that can be fetched.</summary>
[Flags]
[JsonConverter(typeof(JsonStringEnumConverter<KernelParts>))]
public enum KernelParts
{
    /// <summary>vmlinuz, config, System.map placeholder and the modules.</summary>
    Image = 1,
    /// <summary>The headers tree with kbuild, ready for building external modules.</summary>
    Headers = 2,
    /// <summary>The debug package: vmlinux with its full symbol table (large).</summary>
    Debug = 4,
    /// <summary>linux-source of the image's exact version (a tarball).</summary>
    Source = 8,
}

/// <summary>A kernel from the archive, unpacked in the cache and checked.</summary>
public sealed record FetchedKernel(
    KernelTarget Target,
    string Root,
    KernelParts Parts,
    IReadOnlyList<string> Packages,
    IReadOnlyList<string> Warnings,
    string? Distribution = null)
{
    /// <summary>The Debian release whose archive shipped it (kernels fetched before releases were recorded: from their
    /// name).</summary>
    [JsonIgnore]
    public DebianRelease? Release =>
        Distribution is { } codename ? DebianRelease.Parse(codename) : DebianRelease.Of(Target.Release);

    public string Vmlinuz => Path.Combine(Root, "boot", "vmlinuz-" + Target.Release);
    public string Config => Path.Combine(Root, "boot", "config-" + Target.Release);
    public string ModulesDirectory => Path.Combine(Root, "lib", "modules", Target.Release.Value);
    public string HeadersDirectory => Path.Combine(Root, "usr", "src", "linux-headers-" + Target.Release);
    public string? DebugVmlinux =>
        new[] { Path.Combine(Root, "usr", "lib", "debug", "boot", "vmlinux-" + Target.Release),
        Path.Combine(Root, "usr", "lib", "debug", "lib", "modules", Target.Release.Value, "vmlinux") }.FirstOrDefault(
        File.Exists);
    public string? SourceTarball => Directory.Exists(Path.Combine(Root, "usr", "src"))
        ? Directory.GetFiles(Path.Combine(Root, "usr", "src"), "linux-source-*.tar.*").FirstOrDefault() : null;
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(FetchedKernel))]
internal sealed partial class ArchiveJson : JsonSerializerContext;

/// <summary>
/// Fetches Debian kernels (image, headers, debug symbols, source) from the archive apt knows into a cache,
/// without installing anything into the system: <c>apt-get download</c>, then <c>dpkg-deb -x</c>.
/// </summary>
public sealed class DebianKernelArchive(string cacheRoot, Action<string>? progress = null)
{
    private readonly Action<string> _progress = progress ?? (_ => { });

    public static string DefaultCacheRoot =>
        Environment.GetEnvironmentVariable("KINTSUGI_CACHE") is { Length: > 0 } dir ? dir : "/var/cache/kintsugi";

    public string CacheRoot => cacheRoot;

    /// <summary>apt with a private sources list and state for <paramref name="release"/>, under the cache.</summary>
    public ReleaseApt AptFor(DebianRelease release) => new(release, cacheRoot);

    public string KernelDirectory(KernelRelease release) => Path.Combine(cacheRoot, "kernels", release.Value);

    /// <summary>Returns the kernel with at least <paramref name="parts"/> unpacked, fetching what the cache
    /// lacks.</summary>
    public async Task<FetchedKernel>
        FetchAsync(KernelRelease release, KernelParts parts, CancellationToken cancellation = default)
    {
        parts |= KernelParts.Image; // every part is verified against the image's build-id
        var directory = KernelDirectory(release);
        Directory.CreateDirectory(directory);
        using var cacheLock = await CacheLock.AcquireAsync(Path.Combine(directory, ".lock"), cancellation);
        var manifestPath = Path.Combine(directory, "kernel.json");
        var cached = ReadManifest(manifestPath);
        if (cached is not null && (cached.Parts & parts) == parts) return cached;

        var root = Path.Combine(directory, "root");
        var debs = Path.Combine(directory, "debs");
        Directory.CreateDirectory(debs);
        var warnings = new List<string>(cached?.Warnings ?? []);
        var packages = new List<string>(cached?.Packages ?? []);

        var (apt, image) = await LocateAsync(release, cancellation);
        var version = image.Version;

        var wanted = new List<AptPackage>();
        if (cached is null || !cached.Parts.HasFlag(KernelParts.Image)) wanted.Add(image);
        if (parts.HasFlag(KernelParts.Headers) && cached?.Parts.HasFlag(KernelParts.Headers) != true)
        {
            var headers = await apt.ResolveAsync($"linux-headers-{release}", version, cancellation)
                ?? throw new KernelArchiveException($"linux-headers-{release} {version} is not in the archive; " +
                $"modules cannot be built for this kernel");
            wanted.Add(headers);
            // The compiler is not unpacked beside the kernel: it runs from the release's build root
            // (Kintsugi.Kernel.Build).
            foreach (var dependency in headers.Depends.Where(d => !IsCompilerPackage(d.Name)))
            {
                var exact = await apt.ResolveAsync(dependency.Name, version, cancellation);
                if (exact is not null) { wanted.Add(exact); continue; }
                if (dependency.Relation == "=")
                    throw new KernelArchiveException($"{dependency.Name} {version}, needed by the headers, is not in " +
                        $"the archive");
                var newest = await apt.ResolveAsync(dependency.Name, null, cancellation)
                    ?? throw new KernelArchiveException(
                    $"{dependency.Name}, needed by the headers, is not in the archive");
                warnings.Add($"{dependency.Name} {version} is no longer in the archive; using {newest.Version}, " +
                    $"which its headers accept");
                wanted.Add(newest);
            }
        }
        if (parts.HasFlag(KernelParts.Debug) && cached?.Parts.HasFlag(KernelParts.Debug) != true)
            wanted.Add(await apt.ResolveAsync($"linux-image-{release}-dbg", version, cancellation)
                ?? throw new KernelArchiveException($"linux-image-{release}-dbg {version} is not in the archive"));
        if (parts.HasFlag(KernelParts.Source) && cached?.Parts.HasFlag(KernelParts.Source) != true)
        {
            var upstream = release.UpstreamVersion;
            var sourceName = $"linux-source-{upstream.Major}.{upstream.Minor}";
            wanted.Add(await apt.ResolveAsync(sourceName, version, cancellation)
                ?? throw new KernelArchiveException($"{sourceName} {version} (the exact source of this kernel) is " +
                $"not in the archive"));
        }

        foreach (var package in wanted)
        {
            _progress($"downloading {package.Name} {package.Version}");
            var deb = await apt.DownloadAsync(package, debs, cancellation);
            _progress($"unpacking {Path.GetFileName(deb)}");
            await Apt.ExtractAsync(deb, root, cancellation);
            packages.Add($"{package.Name}={package.Version}");
        }

        var fetched = new FetchedKernel(
            new KernelTarget(release, version, cached?.Target.BuildId ?? default), root, parts | (cached?.Parts ?? 0),
            packages.Distinct().ToList(), warnings.Distinct().ToList(),
            apt.Release.Codename);
        await VerifyAndPrepareAsync(fetched, cached, cancellation);
        if (cached is null) fetched = fetched with
        {
            Target = fetched.Target
            with
            { BuildId = await KernelImage.ReadBuildIdAsync(fetched.Vmlinuz, cancellation) }
        };
        await VerifyDebugAsync(fetched, cancellation);
        AtomicWrite(manifestPath, JsonSerializer.SerializeToUtf8Bytes(fetched, ArchiveJson.Default.FetchedKernel));
        _progress($"kernel {fetched.Target} ready in {root}");
        return fetched;
    }

    /// <summary>
    /// The release archive that ships <paramref name="release"/>: the one its name points to first (Debian's
    /// ABI naming), then the others, so a name outside the rules is still found.
    /// </summary>
    private async
        Task<(ReleaseApt Apt, AptPackage Image)> LocateAsync(KernelRelease release, CancellationToken cancellation)
    {
        var guess = DebianRelease.Of(release);
        foreach (var candidate in DebianRelease.All.OrderBy(r => r == guess ? 0 : 1))
        {
            var apt = AptFor(candidate);
            await apt.EnsureListsAsync(ReleaseApt.MaxListAge, _progress, cancellation);
            var image = await apt.ResolveAsync($"linux-image-{release}", null, cancellation)
                ?? await apt.ResolveAsync($"linux-image-{release}-unsigned", null, cancellation);
            if (image is not null) return (apt, image);
        }
        throw new KernelArchiveException(
            $"kernel {release} is not in the archive of {string.Join(", ", DebianRelease.All)} (no " +
            $"linux-image-{release} package). " +
            "See what they offer with: kintsugi kernel list-available");
    }

    internal static bool IsCompilerPackage(string name) =>
        name.StartsWith("linux-compiler-", StringComparison.Ordinal)
        || System.Text.RegularExpressions.Regex.IsMatch(name, @"^(gcc|clang|llvm)(-\d+)?$");

    private async Task
        VerifyAndPrepareAsync(FetchedKernel kernel, FetchedKernel? cached, CancellationToken cancellation)
    {
        if (!File.Exists(kernel.Vmlinuz))
            throw new KernelArchiveException($"the image package did not contain " +
                $"boot/vmlinuz-{kernel.Target.Release}: the release and the package disagree", ExitCode.InternalError);
        // Debian 13 ships everything under /usr (merged /usr); the link is what the merged system has, so
        // every consumer (depmod -b, the lab, the builder) finds lib/modules as on Debian 11 and 12.
        var lib = Path.Combine(kernel.Root, "lib");
        if (!Directory.Exists(kernel.ModulesDirectory) && !Path.Exists(lib)
            && Directory.Exists(Path.Combine(kernel.Root, "usr", "lib", "modules", kernel.Target.Release.Value)))
            File.CreateSymbolicLink(lib, "usr/lib");
        if (!Directory.Exists(kernel.ModulesDirectory))
            throw new KernelArchiveException($"the image package has no lib/modules/{kernel.Target.Release}",
                ExitCode.InternalError);
        if (cached is null)
        {
            // The package ships no modules.dep (its postinst runs depmod); make it so the lab can resolve dependencies.
            var depmod = await ExternalCommand.RunAsync("depmod", ["-b", kernel.Root, kernel.Target.Release.Value],
                cancellation: cancellation);
            if (!depmod.Succeeded)
                throw new KernelArchiveException($"depmod failed: {depmod.StandardError}", ExitCode.Environment);
        }
        if (kernel.Parts.HasFlag(KernelParts.Headers)) PatchHeadersMakefile(kernel);
    }

    /// <summary>Debian's headers Makefile includes the common tree by its installed path; point it into the
    /// cache.</summary>
    private static void PatchHeadersMakefile(FetchedKernel kernel)
    {
        var makefile = Path.Combine(kernel.HeadersDirectory, "Makefile");
        if (!File.Exists(makefile))
            throw new KernelArchiveException($"the headers package has no {makefile}", ExitCode.InternalError);
        var text = File.ReadAllText(makefile);
        var patched = System.Text.RegularExpressions.Regex.Replace(text, @"(?<=\s|^)/usr/src/",
            Path.Combine(kernel.Root, "usr", "src") + "/");
        if (patched != text) File.WriteAllText(makefile, patched);
    }

    private static async Task VerifyDebugAsync(FetchedKernel kernel, CancellationToken cancellation)
    {
        if (!kernel.Parts.HasFlag(KernelParts.Debug)) return;
        var vmlinux = kernel.DebugVmlinux
            ?? throw new KernelArchiveException("the debug package has no vmlinux", ExitCode.InternalError);
        var bytes = await File.ReadAllBytesAsync(vmlinux, cancellation);
        var id = ElfSectionTable.Read(bytes).FindBuildId();
        if (id != kernel.Target.BuildId)
            throw new KernelArchiveException($"the debug vmlinux has build-id {id}, the image " +
                $"{kernel.Target.BuildId}: they are not the same build", ExitCode.InternalError);
    }

    private static FetchedKernel? ReadManifest(string path)
    {
        if (!File.Exists(path)) return null;
        var kernel = JsonSerializer.Deserialize(File.ReadAllBytes(path), ArchiveJson.Default.FetchedKernel);
        return kernel is not null && File.Exists(kernel.Vmlinuz) ? kernel : null;
    }

    private static void AtomicWrite(string path, byte[] bytes)
    {
        File.WriteAllBytes(path + ".tmp", bytes);
        File.Move(path + ".tmp", path, overwrite: true);
    }
}
