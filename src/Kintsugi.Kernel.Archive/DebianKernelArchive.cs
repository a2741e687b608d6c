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
    IReadOnlyList<string> Warnings)
{
    public string Vmlinuz => Path.Combine(Root, "boot", "vmlinuz-" + Target.Release);
    public string Config => Path.Combine(Root, "boot", "config-" + Target.Release);
    public string ModulesDirectory => Path.Combine(Root, "lib", "modules", Target.Release.Value);
    public string HeadersDirectory => Path.Combine(Root, "usr", "src", "linux-headers-" + Target.Release);
    public string? DebugVmlinux => new[] { Path.Combine(Root, "usr", "lib", "debug", "boot", "vmlinux-" + Target.Release),
        Path.Combine(Root, "usr", "lib", "debug", "lib", "modules", Target.Release.Value, "vmlinux") }.FirstOrDefault(File.Exists);
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

    public string KernelDirectory(KernelRelease release) => Path.Combine(cacheRoot, "kernels", release.Value);

    /// <summary>Returns the kernel with at least <paramref name="parts"/> unpacked, fetching what the cache lacks.</summary>
    public async Task<FetchedKernel> FetchAsync(KernelRelease release, KernelParts parts, CancellationToken cancellation = default)
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

        var image = await Apt.ResolveAsync($"linux-image-{release}", null, cancellation)
            ?? await Apt.ResolveAsync($"linux-image-{release}-unsigned", null, cancellation)
            ?? throw new KernelArchiveException(
                $"kernel {release} is not in the archive apt knows (no linux-image-{release} package). " +
                "Run apt-get update, and check the name with: apt-cache search --names-only '^linux-image-.*-cloud-amd64$'");
        var version = image.Version;

        var wanted = new List<AptPackage>();
        if (cached is null || !cached.Parts.HasFlag(KernelParts.Image)) wanted.Add(image);
        if (parts.HasFlag(KernelParts.Headers) && cached?.Parts.HasFlag(KernelParts.Headers) != true)
        {
            var headers = await Apt.ResolveAsync($"linux-headers-{release}", version, cancellation)
                ?? throw new KernelArchiveException($"linux-headers-{release} {version} is not in the archive; modules cannot be built for this kernel");
            wanted.Add(headers);
            foreach (var dependency in headers.Depends.Where(d => !d.Name.StartsWith("linux-compiler-", StringComparison.Ordinal)))
            {
                var exact = await Apt.ResolveAsync(dependency.Name, version, cancellation);
                if (exact is not null) { wanted.Add(exact); continue; }
                if (dependency.Relation == "=")
                    throw new KernelArchiveException($"{dependency.Name} {version}, needed by the headers, is not in the archive");
                var newest = await Apt.ResolveAsync(dependency.Name, null, cancellation)
                    ?? throw new KernelArchiveException($"{dependency.Name}, needed by the headers, is not in the archive");
                warnings.Add($"{dependency.Name} {version} is no longer in the archive; using {newest.Version}, which its headers accept");
                wanted.Add(newest);
            }
        }
        if (parts.HasFlag(KernelParts.Debug) && cached?.Parts.HasFlag(KernelParts.Debug) != true)
            wanted.Add(await Apt.ResolveAsync($"linux-image-{release}-dbg", version, cancellation)
                ?? throw new KernelArchiveException($"linux-image-{release}-dbg {version} is not in the archive"));
        if (parts.HasFlag(KernelParts.Source) && cached?.Parts.HasFlag(KernelParts.Source) != true)
        {
            var upstream = release.UpstreamVersion;
            var sourceName = $"linux-source-{upstream.Major}.{upstream.Minor}";
            wanted.Add(await Apt.ResolveAsync(sourceName, version, cancellation)
                ?? throw new KernelArchiveException($"{sourceName} {version} (the exact source of this kernel) is not in the archive"));
        }

        foreach (var package in wanted)
        {
            _progress($"downloading {package.Name} {package.Version}");
            var deb = await Apt.DownloadAsync(package, debs, cancellation);
            _progress($"unpacking {Path.GetFileName(deb)}");
            await Apt.ExtractAsync(deb, root, cancellation);
            packages.Add($"{package.Name}={package.Version}");
        }

        var fetched = new FetchedKernel(
            new KernelTarget(release, version, cached?.Target.BuildId ?? default), root, parts | (cached?.Parts ?? 0), packages.Distinct().ToList(), warnings.Distinct().ToList());
        await VerifyAndPrepareAsync(fetched, cached, cancellation);
        if (cached is null) fetched = fetched with { Target = fetched.Target with { BuildId = await KernelImage.ReadBuildIdAsync(fetched.Vmlinuz, cancellation) } };
        await VerifyDebugAsync(fetched, cancellation);
        AtomicWrite(manifestPath, JsonSerializer.SerializeToUtf8Bytes(fetched, ArchiveJson.Default.FetchedKernel));
        _progress($"kernel {fetched.Target} ready in {root}");
        return fetched;
    }

    private async Task VerifyAndPrepareAsync(FetchedKernel kernel, FetchedKernel? cached, CancellationToken cancellation)
    {
        if (!File.Exists(kernel.Vmlinuz))
            throw new KernelArchiveException($"the image package did not contain boot/vmlinuz-{kernel.Target.Release}: the release and the package disagree", ExitCode.InternalError);
        if (!Directory.Exists(kernel.ModulesDirectory))
            throw new KernelArchiveException($"the image package has no lib/modules/{kernel.Target.Release}", ExitCode.InternalError);
        if (cached is null)
        {
            // The package ships no modules.dep (its postinst runs depmod); make it so the lab can resolve dependencies.
            var depmod = await ExternalCommand.RunAsync("depmod", ["-b", kernel.Root, kernel.Target.Release.Value], cancellation: cancellation);
            if (!depmod.Succeeded) throw new KernelArchiveException($"depmod failed: {depmod.StandardError}", ExitCode.Environment);
        }
        if (kernel.Parts.HasFlag(KernelParts.Headers)) PatchHeadersMakefile(kernel);
    }

    /// <summary>Debian's headers Makefile includes the common tree by its installed path; point it into the cache.</summary>
    private static void PatchHeadersMakefile(FetchedKernel kernel)
    {
        var makefile = Path.Combine(kernel.HeadersDirectory, "Makefile");
        if (!File.Exists(makefile))
            throw new KernelArchiveException($"the headers package has no {makefile}", ExitCode.InternalError);
        var text = File.ReadAllText(makefile);
        var patched = System.Text.RegularExpressions.Regex.Replace(text, @"(?<=\s|^)/usr/src/", Path.Combine(kernel.Root, "usr", "src") + "/");
        if (patched != text) File.WriteAllText(makefile, patched);
    }

    private static async Task VerifyDebugAsync(FetchedKernel kernel, CancellationToken cancellation)
    {
        if (!kernel.Parts.HasFlag(KernelParts.Debug)) return;
        var vmlinux = kernel.DebugVmlinux ?? throw new KernelArchiveException("the debug package has no vmlinux", ExitCode.InternalError);
        var bytes = await File.ReadAllBytesAsync(vmlinux, cancellation);
        var id = ElfSectionTable.Read(bytes).FindBuildId();
        if (id != kernel.Target.BuildId)
            throw new KernelArchiveException($"the debug vmlinux has build-id {id}, the image {kernel.Target.BuildId}: they are not the same build", ExitCode.InternalError);
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
