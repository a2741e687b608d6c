using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Toolchains;

namespace Kintsugi.Kernel.Build;

/// <summary>Builds out-of-tree modules with kbuild against a fetched kernel's headers.</summary>
public static class ExternalModuleBuild
{
    /// <summary>
    /// Copies <paramref name="sourceDirectory"/> (C files and a Kbuild file) into <paramref name="outputDirectory"/>,
    /// builds it there and returns the modules built.
    /// </summary>
    public static async Task<IReadOnlyList<string>> BuildAsync(FetchedKernel kernel, string sourceDirectory,
        string outputDirectory, CancellationToken cancellation = default)
    {
        if (!kernel.Parts.HasFlag(KernelParts.Headers))
            throw new ModuleBuildException($"kernel {kernel.Target.Release} was fetched without its headers");
        Directory.CreateDirectory(outputDirectory);
        foreach (var file in Directory.GetFiles(sourceDirectory))
            File.Copy(file, Path.Combine(outputDirectory, Path.GetFileName(file)), overwrite: true);
        // With the kernel's own compiler: the host's, or its release's build root (Debian 11's gcc-10, Debian 13's
        // gcc-14).
        var toolchain = await ToolchainSelection.ForFetchedKernelAsync(kernel, _ => { }, cancellation);
        var output = Path.GetFullPath(outputDirectory);
        var result = await toolchain.RunAsync("make",
            ["-C", kernel.HeadersDirectory, $"M={output}", $"-j{Environment.ProcessorCount}", "modules"],
            output, [Path.GetDirectoryName(kernel.Root)!, output], cancellation: cancellation);
        if (!result.Succeeded)
            throw new ModuleBuildException($"building the modules in {sourceDirectory} for {kernel.Target.Release} " +
                $"failed:\n{Tail(result.StandardError + result.StandardOutput)}");
        return Directory.GetFiles(outputDirectory, "*.ko").Order(StringComparer.Ordinal).ToList();
    }

    private static string Tail(string text) => string.Join('\n', text.Split('\n').TakeLast(30));
}

/// <summary>A kernel module could not be built.</summary>
public sealed class ModuleBuildException(string message, Exception? inner = null,
    ExitCode exitCode = ExitCode.InputRefused) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = exitCode;
}
