namespace Kintsugi.Kernel.Build;

/// <summary>
/// A private, writable view of a prepared source tree for one build: an overlay mount whose lower layer is
/// the shared cached tree and whose upper layer collects everything this build writes (patched sources,
/// objects, kbuild's .cmd files). The shared tree is never modified, so concurrent builds for the same
/// kernel cannot see each other's patches, and a build that dies midway leaves nothing behind in the cache.
/// </summary>
public sealed class BuildWorkspace : IAsyncDisposable
{
    private readonly string _root;
    private bool _mounted;

    public KernelSourceTree Tree { get; }

    /// <summary>The merged view: the tree as this build sees it.</summary>
    public string Directory { get; }

    private BuildWorkspace(KernelSourceTree tree, string root)
    {
        Tree = tree;
        _root = root;
        Directory = Path.Combine(root, "merged");
    }

    public static async Task<BuildWorkspace> OpenAsync(KernelSourceTree tree, CancellationToken cancellation = default)
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
            throw new ModuleBuildException("a build mounts an overlay over the prepared source tree, which needs root: run kintsugi kernel build as root", exitCode: ExitCode.Environment);
        var root = System.IO.Directory.CreateTempSubdirectory("kintsugi-build-").FullName;
        var workspace = new BuildWorkspace(tree, root);
        foreach (var part in new[] { "upper", "work", "merged" }) System.IO.Directory.CreateDirectory(Path.Combine(root, part));
        var options = $"lowerdir={tree.Directory},upperdir={Path.Combine(root, "upper")},workdir={Path.Combine(root, "work")}";
        var mount = await ExternalCommand.RunAsync("mount", ["-t", "overlay", "overlay", "-o", options, workspace.Directory], cancellation: cancellation);
        if (!mount.Succeeded)
        {
            System.IO.Directory.Delete(root, recursive: true);
            throw new ModuleBuildException($"cannot mount an overlay over {tree.Directory} (the kernel needs overlayfs): {mount.StandardError.Trim()}", exitCode: ExitCode.Environment);
        }
        workspace._mounted = true;
        return workspace;
    }

    /// <summary>
    /// Compiles one object with the distribution's flags plus <paramref name="extraCFlags"/> and copies it to
    /// <paramref name="destination"/>. Kbuild records each object's command line, so changing the flags
    /// between calls recompiles.
    /// </summary>
    public async Task CompileAsync(string objectPath, string destination, string? extraCFlags, CancellationToken cancellation = default)
    {
        KernelSourceTree.CheckObjectPath(objectPath);
        List<string> arguments = [$"-j{Environment.ProcessorCount}", objectPath];
        // An empty KCFLAGS is still a change of command line, so the distribution's build is recompiled after a flagged one.
        arguments.Add($"KCFLAGS={extraCFlags ?? ""}");
        var result = await ExternalCommand.RunAsync("make", arguments, Directory, cancellation: cancellation);
        if (!result.Succeeded)
            throw new ModuleBuildException($"compiling {objectPath} failed:\n" +
                string.Join('\n', (result.StandardError + result.StandardOutput).Split('\n').Where(l => l.Length > 0).TakeLast(30)));
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
        File.Copy(Path.Combine(Directory, objectPath), destination, overwrite: true);
    }

    /// <summary>
    /// Compiles several objects in one make invocation (kbuild runs them in parallel) and copies each to the
    /// same relative path under <paramref name="destinationDirectory"/>.
    /// </summary>
    public async Task CompileAllAsync(IReadOnlyList<string> objectPaths, string destinationDirectory, string? extraCFlags, CancellationToken cancellation = default)
    {
        foreach (var objectPath in objectPaths) KernelSourceTree.CheckObjectPath(objectPath);
        List<string> arguments = [$"-j{Environment.ProcessorCount}", .. objectPaths, $"KCFLAGS={extraCFlags ?? ""}"];
        var result = await ExternalCommand.RunAsync("make", arguments, Directory, cancellation: cancellation);
        if (!result.Succeeded)
            throw new ModuleBuildException($"compiling {string.Join(", ", objectPaths)} failed:\n" +
                string.Join('\n', (result.StandardError + result.StandardOutput).Split('\n').Where(l => l.Length > 0).TakeLast(30)));
        foreach (var objectPath in objectPaths)
        {
            var destination = Path.Combine(destinationDirectory, objectPath);
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
            File.Copy(Path.Combine(Directory, objectPath), destination, overwrite: true);
        }
    }

    /// <summary>Applies a patch to this build's view of the tree; the shared tree is untouched.</summary>
    public async Task ApplyAsync(SourcePatch patch, CancellationToken cancellation = default)
    {
        var file = Path.Combine(_root, "patch-" + patch.Sha256[..12] + ".patch");
        await File.WriteAllTextAsync(file, patch.Text, cancellation);
        var result = await ExternalCommand.RunAsync("patch", ["-p1", "--batch", "--no-backup-if-mismatch", "-i", file], Directory, cancellation: cancellation);
        if (!result.Succeeded)
            throw new SourcePatchException($"{patch.Name} does not apply to the source of {Tree.Target.Release}:\n{result.StandardOutput.Trim()}");
    }

    public async ValueTask DisposeAsync()
    {
        if (_mounted)
        {
            var result = await ExternalCommand.RunAsync("umount", [Directory]);
            if (!result.Succeeded) result = await ExternalCommand.RunAsync("umount", ["-l", Directory]);
            _mounted = !result.Succeeded;
        }
        // Deleting through a live overlay is not cleanup; if it would not unmount, leave it for the operator.
        if (!_mounted) System.IO.Directory.Delete(_root, recursive: true);
    }
}
