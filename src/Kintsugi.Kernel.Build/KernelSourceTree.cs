using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Toolchains;

namespace Kintsugi.Kernel.Build;

/// <summary>
/// The exact source tree of a distribution kernel, prepared once and cached: linux-source of the image's
/// exact package version, the build's own .config and .kernelvariables from its headers package (which
/// pin the compiler and KERNELRELEASE), and <c>make prepare modules_prepare</c>. After that one
/// translation unit compiles in seconds, with the distribution's flags.
/// </summary>
public sealed class KernelSourceTree
{
    private const string PreparedStamp = ".kintsugi-prepared";

    public KernelTarget Target { get; }
    public string Directory { get; }

    /// <summary>Where this tree's commands run: the compiler that prepared it is the one every unit is compiled
    /// with.</summary>
    public Toolchain Toolchain { get; }

    /// <summary>The host directories the tree's commands use: the tree and, for a Debian kernel, its whole cache entry
    /// (headers, objects).</summary>
    public IReadOnlyList<string> Visible { get; }

    private KernelSourceTree(KernelTarget target, string directory, Toolchain toolchain, IReadOnlyList<string> visible)
    {
        Target = target;
        Directory = directory;
        Toolchain = toolchain;
        Visible = visible;
    }

    /// <summary>A tree someone else configured and prepared (a generic target); used as it is, with the toolchain
    /// checked to be its own.</summary>
    public static KernelSourceTree Open(KernelTarget target, string directory, Toolchain toolchain)
    {
        if (!File.Exists(Path.Combine(directory, "include", "generated", "autoconf.h")))
            throw new ModuleBuildException($"{directory} is not a prepared kernel tree (no " +
                $"include/generated/autoconf.h): run make prepare modules_prepare there with the kernel's .config",
                exitCode: ExitCode.Usage);
        return new KernelSourceTree(target, directory, toolchain, [directory]);
    }

    /// <summary>Prepares with the toolchain the kernel's .config names (the host's, or its release's build root in the
    /// same cache).</summary>
    public static async Task<KernelSourceTree> PrepareAsync(FetchedKernel kernel, Action<string>? progress = null,
        CancellationToken cancellation = default)
    {
        progress ??= _ => { };
        var toolchain = await ToolchainSelection.ForFetchedKernelAsync(kernel, progress, cancellation);
        return await PrepareAsync(kernel, toolchain, progress, cancellation);
    }

    public static async Task<KernelSourceTree> PrepareAsync(FetchedKernel kernel, Toolchain toolchain,
        Action<string> progress, CancellationToken cancellation)
    {
        var tarball = kernel.SourceTarball
            ?? throw new ModuleBuildException(
                $"kernel {kernel.Target.Release} was fetched without its source (kintsugi kernel fetch --source)");
        if (!kernel.Parts.HasFlag(KernelParts.Headers))
            throw new ModuleBuildException(
                $"kernel {kernel.Target.Release} was fetched without its headers, which carry the build's .config");
        var kernelDirectory = Path.GetDirectoryName(kernel.Root)!;
        var parent = Path.Combine(kernelDirectory, "tree");
        IReadOnlyList<string> visible = [kernelDirectory];
        var directory = Path.Combine(parent, "linux");
        var stamp = Path.Combine(directory, PreparedStamp);
        System.IO.Directory.CreateDirectory(parent);
        using var treeLock = await CacheLock.AcquireAsync(Path.Combine(parent, ".lock"), cancellation);
        // Trees prepared on the host before build roots existed keep their stamp; any other toolchain is named in it.
        var prepared = $"{kernel.Target.BuildId} in place"
            + (toolchain == Toolchain.Host ? "" : $" with {toolchain.Identity}");
        if (File.Exists(stamp))
        {
            var recorded = (await File.ReadAllTextAsync(stamp, cancellation)).Trim();
            if (recorded == prepared) return new KernelSourceTree(kernel.Target, directory, toolchain, visible);
            if (recorded == kernel.Target.BuildId.ToString() && toolchain == Toolchain.Host)
            {
                // Prepared by an earlier version in its staging directory: the host tools (objtool) recorded
                // that path and every build would rebuild them. Finish them here once.
                progress("refreshing the prepared tree's build tools in place");
                await Run(toolchain, visible, "make", [$"-j{Environment.ProcessorCount}", "modules_prepare"], directory,
                    cancellation);
                await File.WriteAllTextAsync(stamp, prepared + "\n", cancellation);
                return new KernelSourceTree(kernel.Target, directory, toolchain, visible);
            }
        }

        // The stamp, written last, is what makes a tree prepared: an interrupted preparation leaves a tree
        // without it, which the next one deletes. The tree is prepared at its final path because the host
        // tools (objtool) record where they were built, and every later build would rebuild them otherwise.
        var staging = Path.Combine(parent, "staging");
        if (System.IO.Directory.Exists(staging)) System.IO.Directory.Delete(staging, recursive: true);
        if (System.IO.Directory.Exists(directory)) System.IO.Directory.Delete(directory, recursive: true);
        System.IO.Directory.CreateDirectory(staging);
        progress($"unpacking {Path.GetFileName(tarball)}");
        await Run(Toolchain.Host, [], "tar", ["-xf", tarball, "-C", staging], staging, cancellation);
        var unpacked = System.IO.Directory.GetDirectories(staging).SingleOrDefault()
            ?? throw new ModuleBuildException($"{tarball} did not unpack to a single directory");
        System.IO.Directory.Move(unpacked, directory);
        System.IO.Directory.Delete(staging, recursive: true);
        foreach (var file in new[] { ".config", ".kernelvariables" })
            File.Copy(Path.Combine(kernel.HeadersDirectory, file), Path.Combine(directory, file), overwrite: true);

        progress($"make prepare modules_prepare with {toolchain.Description} (about a minute)");
        await Run(toolchain, visible, "make", [$"-j{Environment.ProcessorCount}", "prepare", "modules_prepare"],
            directory, cancellation);
        await CheckConfigUnchangedAsync(kernel, directory, cancellation);
        var release = (await Run(toolchain, visible, "make", ["-s", "--no-print-directory",
            "--eval=kintsugi-release: ; @echo $(KERNELRELEASE)", "kintsugi-release"], directory, cancellation)).Trim();
        if (release != kernel.Target.Release.Value)
            throw new ModuleBuildException(
                $"the prepared tree builds kernel release {release}, not {kernel.Target.Release}");
        await File.WriteAllTextAsync(stamp, prepared + "\n", cancellation);
        return new KernelSourceTree(kernel.Target, directory, toolchain, visible);
    }

    /// <summary>
    /// kbuild re-evaluates the configuration against the tools it finds (compiler, assembler, linker and pahole
    /// versions); a tool other than the distribution's changes the .config silently, and with it the code.
    /// </summary>
    private static async Task CheckConfigUnchangedAsync(FetchedKernel kernel, string directory,
        CancellationToken cancellation)
    {
        static async Task<HashSet<string>> SettingsAsync(string path, CancellationToken cancellation) =>
            [.. (await File.ReadAllLinesAsync(path, cancellation)).Where(l =>
                l.StartsWith("CONFIG_", StringComparison.Ordinal))];
        var shipped = await SettingsAsync(Path.Combine(kernel.HeadersDirectory, ".config"), cancellation);
        var prepared = await SettingsAsync(Path.Combine(directory, ".config"), cancellation);
        var changed = shipped.Except(prepared).Concat(prepared.Except(shipped)).Order(StringComparer.Ordinal).ToList();
        if (changed.Count > 0)
            throw new ToolchainException($"preparing the tree of {kernel.Target.Release} changed its configuration, " +
                $"so the toolchain is not the one it was built with:\n" +
                string.Join('\n', changed.Take(20).Select(c => "  " + c)));
    }

    internal static void CheckObjectPath(string objectPath)
    {
        if (Path.IsPathRooted(objectPath) || objectPath.Contains("..", StringComparison.Ordinal)
            || !objectPath.EndsWith(".o", StringComparison.Ordinal))
            throw new ModuleBuildException(
                $"'{objectPath}' is not an object path inside the tree (for example fs/proc/cmdline.o)");
    }

    /// <summary>
    /// Checks, without changing the tree, that a patch applies; throws with patch's own report when it does
    /// not. Returns the hunks that applied only with fuzz (context lines ignored), which a patch engineer
    /// should review: they are where a fix written for other source met this one.
    /// </summary>
    public async Task<IReadOnlyList<string>> CheckAppliesAsync(SourcePatch patch,
        CancellationToken cancellation = default)
    {
        var file = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(file, patch.Text, cancellation);
            var result = await ExternalCommand.RunAsync("patch", ["-p1", "--dry-run", "--batch", "-i", file], Directory,
                cancellation: cancellation);
            if (!result.Succeeded)
                throw new SourcePatchException(
                    $"{patch.Name} does not apply to the source of {Target}:\n{result.StandardOutput.Trim()}");
            var fuzzy = new List<string>();
            string? current = null;
            foreach (var line in result.StandardOutput.Split('\n'))
            {
                if (line.StartsWith("checking file ", StringComparison.Ordinal))
                    current = line["checking file ".Length..].Trim();
                else if (line.Contains(" with fuzz ", StringComparison.Ordinal)) fuzzy.Add($"{current}: {line.Trim()}");
            }
            return fuzzy;
        }
        finally { File.Delete(file); }
    }

    private static async Task<string> Run(Toolchain toolchain, IReadOnlyList<string> visible, string tool,
        IReadOnlyList<string> arguments, string directory, CancellationToken cancellation)
    {
        var result = await toolchain.RunAsync(tool, arguments, directory, visible, cancellation: cancellation);
        if (!result.Succeeded)
            throw new ModuleBuildException($"{tool} {string.Join(' ', arguments)} failed in {directory}:\n" +
                string.Join('\n',
                    (result.StandardOutput + result.StandardError).Split('\n').Where(l => l.Length > 0).TakeLast(25)));
        return result.StandardOutput;
    }
}
