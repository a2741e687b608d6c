using Kintsugi.Kernel.Archive;

namespace Kintsugi.Kernel.Build.Toolchains;

/// <summary>
/// Build roots in the cache (<c>CACHE/buildroots/CODENAME-COMPILER</c>), one per release and compiler, made on
/// first use by mmdebstrap from the release's own suites and reused after: the only place a release's
/// compiler is installed. mmdebstrap itself is taken from the cache too when the host does not have it.
/// </summary>
public sealed class BuildRoots(DebianKernelArchive archive, Action<string> progress)
{
    private const string ReadyStamp = ".kintsugi-build-root";

    /// <summary>What kbuild needs besides the compiler to prepare a tree and link modules (binutils comes with
    /// gcc).</summary>
    public static readonly IReadOnlyList<string> BuildPackages =
        ["libc6-dev", "make", "bc", "bison", "flex", "libelf-dev", "libssl-dev", "dwarves", "kmod", "cpio", "xz-utils",
            "zstd", "patch", "perl",
         "python3"]; // python3: tools/bpf/resolve_btfids generates libbpf's helper definitions with it

    private string Directory => Path.Combine(archive.CacheRoot, "buildroots");

    public async Task<BuildRootToolchain> GetAsync(DebianRelease release, string compilerPackage,
        CancellationToken cancellation)
    {
        var name = $"{release.Codename}-{compilerPackage}";
        var parent = Path.Combine(Directory, name);
        var root = Path.Combine(parent, "root");
        var toolchain = new BuildRootToolchain(root, $"the {release} build root with {compilerPackage} ({root})",
            $"buildroot {name}");
        System.IO.Directory.CreateDirectory(parent);
        using var rootLock = await CacheLock.AcquireAsync(Path.Combine(parent, ".lock"), cancellation);
        // A root made before a package joined the list is made again (its stamp lists what it holds).
        var stampPath = Path.Combine(parent, ReadyStamp);
        if (File.Exists(stampPath) && BuildPackages.Prepend(compilerPackage)
                .All(p => File.ReadLines(stampPath).Any(l => l.StartsWith(p + "=", StringComparison.Ordinal))))
            return WithHostCompiler(toolchain, compilerPackage);
        File.Delete(stampPath);

        // Made beside its final place and renamed: an interrupted run leaves only a staging directory, removed next
        // time.
        var staging = Path.Combine(parent, "staging");
        await RemoveAsync(staging, cancellation);
        await RemoveAsync(root, cancellation);
        var mmdebstrap = await MmdebstrapAsync(cancellation);
        progress($"creating {toolchain.Description} with mmdebstrap (a few minutes, once)");
        var result = await ExternalCommand.RunAsync(mmdebstrap[0], [.. mmdebstrap.Skip(1),
            "--mode=root", "--variant=minbase", "--include=" + string.Join(',', BuildPackages.Prepend(compilerPackage)),
            "--aptopt=Acquire::Languages \"none\"", release.Codename, staging, .. release.SourcesLines],
            onOutputLine: line =>
            {
                if (line.StartsWith("I: ", StringComparison.Ordinal))
                    progress($"mmdebstrap: {line[3..]}");
            },
            cancellation: cancellation);
        if (!result.Succeeded)
        {
            await RemoveAsync(staging, cancellation);
            throw new ToolchainException(
                $"mmdebstrap could not create the {release} build root with {compilerPackage}:\n" +
                string.Join('\n',
                    (result.StandardError + result.StandardOutput).Split('\n').Where(l => l.Length > 0).TakeLast(20)));
        }
        System.IO.Directory.Move(staging, root);
        var packages = await toolchain.RunAsync("dpkg-query", ["-W", "-f", "${Package}=${Version}\\n"], "/", [],
            cancellation: cancellation);
        await File.WriteAllTextAsync(Path.Combine(parent, ReadyStamp), packages.StandardOutput, cancellation);
        progress($"{toolchain.Description} ready");
        return WithHostCompiler(toolchain, compilerPackage);
    }

    /// <summary>
    /// kbuild compiles its host programs (fixdep, objtool, modpost) with plain <c>gcc</c>, which on the
    /// distribution's builders was the release's default compiler, the kernel's own; the root gets the same.
    /// </summary>
    private static BuildRootToolchain WithHostCompiler(BuildRootToolchain toolchain, string compilerPackage)
    {
        var link = Path.Combine(toolchain.Root, "usr", "local", "bin", "gcc");
        if (!File.Exists(Path.Combine(toolchain.Root, "usr", "bin", "gcc")) && !Path.Exists(link))
        {
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(link)!);
            File.CreateSymbolicLink(link, $"/usr/bin/{compilerPackage}");
        }
        return toolchain;
    }

    /// <summary>The mmdebstrap command: the host's, or the Debian 12 package unpacked into the cache (a Perl
    /// script).</summary>
    private async Task<string[]> MmdebstrapAsync(CancellationToken cancellation)
    {
        if (ExternalCommand.Exists("mmdebstrap")) return ["mmdebstrap"];
        var tools = Path.Combine(archive.CacheRoot, "tools", "mmdebstrap");
        var script = Path.Combine(tools, "usr", "bin", "mmdebstrap");
        if (!File.Exists(script))
        {
            progress("fetching mmdebstrap into the cache");
            await archive.AptFor(DebianRelease.Bookworm).UnpackAsync("mmdebstrap", tools, cancellation);
        }
        return ["perl", script];
    }

    /// <summary>Removes a root that may still have something mounted inside (a killed run), never following into the
    /// mounts.</summary>
    private static async Task RemoveAsync(string directory, CancellationToken cancellation)
    {
        if (!System.IO.Directory.Exists(directory)) return;
        var result = await ExternalCommand.RunAsync("rm", ["-rf", "--one-file-system", directory],
            cancellation: cancellation);
        if (!result.Succeeded)
            throw new ToolchainException(
                $"could not remove the unfinished build root {directory}: {result.StandardError.Trim()}");
    }
}
