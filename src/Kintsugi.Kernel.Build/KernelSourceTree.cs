using Kintsugi.Kernel.Archive;

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

    private KernelSourceTree(KernelTarget target, string directory)
    {
        Target = target;
        Directory = directory;
    }

    /// <summary>A tree someone else configured and prepared (a generic target); used as it is.</summary>
    public static KernelSourceTree Open(KernelTarget target, string directory)
    {
        if (!File.Exists(Path.Combine(directory, "include", "generated", "autoconf.h")))
            throw new ModuleBuildException($"{directory} is not a prepared kernel tree (no include/generated/autoconf.h): run make prepare modules_prepare there with the kernel's .config", exitCode: ExitCode.Usage);
        return new KernelSourceTree(target, directory);
    }

    public static async Task<KernelSourceTree> PrepareAsync(FetchedKernel kernel, Action<string>? progress = null, CancellationToken cancellation = default)
    {
        progress ??= _ => { };
        var tarball = kernel.SourceTarball
            ?? throw new ModuleBuildException($"kernel {kernel.Target.Release} was fetched without its source (kintsugi kernel fetch --source)");
        if (!kernel.Parts.HasFlag(KernelParts.Headers))
            throw new ModuleBuildException($"kernel {kernel.Target.Release} was fetched without its headers, which carry the build's .config");
        var parent = Path.Combine(Path.GetDirectoryName(kernel.Root)!, "tree");
        var directory = Path.Combine(parent, "linux");
        var stamp = Path.Combine(directory, PreparedStamp);
        System.IO.Directory.CreateDirectory(parent);
        using var treeLock = await CacheLock.AcquireAsync(Path.Combine(parent, ".lock"), cancellation);
        var prepared = $"{kernel.Target.BuildId} in place";
        if (File.Exists(stamp))
        {
            var recorded = (await File.ReadAllTextAsync(stamp, cancellation)).Trim();
            if (recorded == prepared) return new KernelSourceTree(kernel.Target, directory);
            if (recorded == kernel.Target.BuildId.ToString())
            {
                // Prepared by an earlier version in its staging directory: the host tools (objtool) recorded
                // that path and every build would rebuild them. Finish them here once.
                progress("refreshing the prepared tree's build tools in place");
                await Run("make", [$"-j{Environment.ProcessorCount}", "modules_prepare"], directory, cancellation);
                await File.WriteAllTextAsync(stamp, prepared + "\n", cancellation);
                return new KernelSourceTree(kernel.Target, directory);
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
        await Run("tar", ["-xf", tarball, "-C", staging], staging, cancellation);
        var unpacked = System.IO.Directory.GetDirectories(staging).SingleOrDefault()
            ?? throw new ModuleBuildException($"{tarball} did not unpack to a single directory");
        System.IO.Directory.Move(unpacked, directory);
        System.IO.Directory.Delete(staging, recursive: true);
        foreach (var file in new[] { ".config", ".kernelvariables" })
            File.Copy(Path.Combine(kernel.HeadersDirectory, file), Path.Combine(directory, file), overwrite: true);

        progress("make prepare modules_prepare (about a minute)");
        await Run("make", [$"-j{Environment.ProcessorCount}", "prepare", "modules_prepare"], directory, cancellation);
        var release = (await Run("make", ["-s", "--no-print-directory", "--eval=kintsugi-release: ; @echo $(KERNELRELEASE)", "kintsugi-release"], directory, cancellation)).Trim();
        if (release != kernel.Target.Release.Value)
            throw new ModuleBuildException($"the prepared tree builds kernel release {release}, not {kernel.Target.Release}");
        await File.WriteAllTextAsync(stamp, prepared + "\n", cancellation);
        return new KernelSourceTree(kernel.Target, directory);
    }

    internal static void CheckObjectPath(string objectPath)
    {
        if (Path.IsPathRooted(objectPath) || objectPath.Contains("..", StringComparison.Ordinal) || !objectPath.EndsWith(".o", StringComparison.Ordinal))
            throw new ModuleBuildException($"'{objectPath}' is not an object path inside the tree (for example fs/proc/cmdline.o)");
    }

    /// <summary>
    /// Checks, without changing the tree, that a patch applies; throws with patch's own report when it does
    /// not. Returns the hunks that applied only with fuzz (context lines ignored), which a patch engineer
    /// should review: they are where a fix written for other source met this one.
    /// </summary>
    public async Task<IReadOnlyList<string>> CheckAppliesAsync(SourcePatch patch, CancellationToken cancellation = default)
    {
        var file = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(file, patch.Text, cancellation);
            var result = await ExternalCommand.RunAsync("patch", ["-p1", "--dry-run", "--batch", "-i", file], Directory, cancellation: cancellation);
            if (!result.Succeeded)
                throw new SourcePatchException($"{patch.Name} does not apply to the source of {Target}:\n{result.StandardOutput.Trim()}");
            var fuzzy = new List<string>();
            string? current = null;
            foreach (var line in result.StandardOutput.Split('\n'))
            {
                if (line.StartsWith("checking file ", StringComparison.Ordinal)) current = line["checking file ".Length..].Trim();
                else if (line.Contains(" with fuzz ", StringComparison.Ordinal)) fuzzy.Add($"{current}: {line.Trim()}");
            }
            return fuzzy;
        }
        finally { File.Delete(file); }
    }

    private static async Task<string> Run(string tool, IReadOnlyList<string> arguments, string directory, CancellationToken cancellation)
    {
        var result = await ExternalCommand.RunAsync(tool, arguments, directory, cancellation: cancellation);
        if (!result.Succeeded)
            throw new ModuleBuildException($"{tool} {string.Join(' ', arguments)} failed in {directory}:\n" +
                string.Join('\n', (result.StandardError + result.StandardOutput).Split('\n').TakeLast(25)));
        return result.StandardOutput;
    }
}
