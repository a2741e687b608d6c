using Kintsugi.Kernel.Archive;

namespace Kintsugi.Kernel.Build.Toolchains;

/// <summary>
/// The one policy for which compiler builds a kernel's code: exactly the one its <c>.config</c> names. The
/// host's own when its first <c>--version</c> line is that text; else, for a Debian kernel, its release's
/// build root, checked the same way; anything else is refused before a single unit compiles.
/// </summary>
public static class ToolchainSelection
{
    /// <summary>The toolchain of a kernel fetched into a cache (CACHE/kernels/RELEASE/root), its build roots in the
    /// same cache.</summary>
    public static Task<Toolchain> ForFetchedKernelAsync(FetchedKernel kernel, Action<string> progress,
        CancellationToken cancellation)
    {
        var cacheRoot = Path.GetFullPath(Path.Combine(kernel.Root, "..", "..", ".."));
        return ForDebianKernelAsync(kernel, new BuildRoots(new DebianKernelArchive(cacheRoot, progress), progress),
            progress, cancellation);
    }

    public static async Task<Toolchain> ForDebianKernelAsync(FetchedKernel kernel, BuildRoots roots,
        Action<string> progress, CancellationToken cancellation)
    {
        var needed = CompilerRequirement.FromConfig(kernel.Config);
        var host = await VersionTextAsync(Toolchain.Host, needed.Command, cancellation);
        if (host == needed.VersionText) return Toolchain.Host;
        var release = kernel.Release
            ?? throw new ToolchainException(
                $"{kernel.Target.Release} was built with {needed}, the host has {host ?? $"no {needed.Command}"}, " +
            $"and the kernel's Debian release is unknown");
        var package = needed.DebianPackage
            ?? throw new ToolchainException($"{kernel.Target.Release} was built with {needed}, which is not a Debian " +
            $"gcc package this builder can install");
        progress($"{kernel.Target.Release} was built with {needed}; the host has {host ?? $"no {needed.Command}"}: " +
            $"compiling in the {release} build root");
        var root = await roots.GetAsync(release, package, cancellation);
        var inRoot = await VersionTextAsync(root, needed.Command, cancellation);
        if (inRoot != needed.VersionText)
            throw new ToolchainException($"{kernel.Target.Release} was built with {needed}, but {release}'s archive " +
                $"now installs {inRoot ?? $"no {needed.Command}"} " +
                "(the compiler was updated after this kernel was built): a livepatch compiled with it could differ " +
                "from the shipped code, so it is not built");
        return root;
    }

    /// <summary>A directory target is built with the host's compiler, and only when it is the one the tree's .config
    /// names.</summary>
    public static async Task<Toolchain> ForDirectoryAsync(string tree, CancellationToken cancellation)
    {
        var needed = CompilerRequirement.FromConfig(Path.Combine(tree, ".config"));
        var host = await VersionTextAsync(Toolchain.Host, needed.Command, cancellation);
        if (host == needed.VersionText) return Toolchain.Host;
        throw new ToolchainException(
            $"the kernel in {tree} was built with {needed}, but this machine's {needed.Command} is " +
            $"{(host is null ? "not installed" : $"'{host}'")}. " +
            "Build on a machine (or in a container) of the kernel's distribution with exactly that compiler " +
            "installed; see docs/other-distributions.md", ExitCode.InputRefused);
    }

    /// <summary>The first line of <c>COMMAND --version</c> where the toolchain runs it; null when it does not
    /// run.</summary>
    public static async Task<string?> VersionTextAsync(Toolchain toolchain, string command,
        CancellationToken cancellation)
    {
        CommandResult result;
        try { result = await toolchain.RunAsync(command, ["--version"], "/", [], cancellation: cancellation); }
        catch (ToolMissingException) { return null; } // not on the host's PATH
        return result.Succeeded ? result.StandardOutput.Split('\n')[0].Trim() : null;
    }
}
