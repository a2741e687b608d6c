namespace Kintsugi.Kernel.Build;

/// <summary>
/// A private, writable view of a prepared source tree for one build: an overlay whose lower layer is the
/// shared cached tree and whose upper layer collects everything this build writes (patched sources,
/// objects, kbuild's .cmd files). The shared tree is never modified, so concurrent builds for the same
/// kernel cannot see each other's patches.
/// <para>
/// Every command runs in a mount namespace of its own where the overlay is mounted at the tree's own path:
/// kbuild and the host tools it built (objtool) recorded absolute paths when the tree was prepared, and
/// at any other path they would rebuild themselves on every build. Nothing stays mounted between commands,
/// so a build killed midway leaves no mount behind, only its directory.
/// </para>
/// </summary>
public sealed class BuildWorkspace : IAsyncDisposable
{
    private readonly string _root;

    public KernelSourceTree Tree { get; }

    /// <summary>Where this build's changes to the tree are kept (the overlay's upper layer).</summary>
    public string ChangesDirectory => Path.Combine(_root, "upper");

    private BuildWorkspace(KernelSourceTree tree, string root)
    {
        Tree = tree;
        _root = root;
    }

    public static async Task<BuildWorkspace> OpenAsync(KernelSourceTree tree, CancellationToken cancellation = default)
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
            throw new ModuleBuildException("a build mounts an overlay over the prepared source tree, which needs " +
                "root: run kintsugi kernel build as root", exitCode: ExitCode.Environment);
        var root = System.IO.Directory.CreateTempSubdirectory("kintsugi-build-").FullName;
        var workspace = new BuildWorkspace(tree, root);
        foreach (var part in new[] { "upper", "work" }) System.IO.Directory.CreateDirectory(Path.Combine(root, part));
        var probe = await workspace.RunAsync("true", [], cancellation);
        if (!probe.Succeeded)
        {
            System.IO.Directory.Delete(root, recursive: true);
            throw new ModuleBuildException($"cannot mount an overlay over {tree.Directory} in a private mount " +
                $"namespace (the kernel needs overlayfs, util-linux unshare): {probe.StandardError.Trim()}",
                exitCode: ExitCode.Environment);
        }
        return workspace;
    }

    /// <summary>Runs a tool in the tree as this build sees it, with the tree's own toolchain.</summary>
    private Task<CommandResult> RunAsync(string tool, IReadOnlyList<string> arguments, CancellationToken cancellation,
        Action<string>? onOutputLine = null) =>
        Tree.Toolchain.RunAsync(tool, arguments, Tree.Directory, [.. Tree.Visible, _root],
            new Toolchains.OverlayMount(Tree.Directory, Path.Combine(_root, "upper"), Path.Combine(_root, "work")),
        cancellation,
            onOutputLine);

    /// <summary>The contents of a file of the tree as this build sees it.</summary>
    public Task<string> ReadAllTextAsync(string relativePath, CancellationToken cancellation = default) =>
        File.ReadAllTextAsync(Resolve(relativePath), cancellation);

    /// <summary>Where a file of the merged view lives: this build's layer when it wrote it, else the shared tree (which
    /// kbuild may have found up to date).</summary>
    private string Resolve(string relativePath)
    {
        var changed = Path.Combine(ChangesDirectory, relativePath);
        return File.Exists(changed) ? changed : Path.Combine(Tree.Directory, relativePath);
    }

    /// <summary>
    /// Compiles one object with the distribution's flags plus <paramref name="extraCFlags"/> and copies it to
    /// <paramref name="destination"/>. Kbuild records each object's command line, so changing the flags
    /// between calls recompiles.
    /// </summary>
    public async Task CompileAsync(string objectPath, string destination, string? extraCFlags,
        CancellationToken cancellation = default)
    {
        await CompileAllAsync([objectPath], Path.Combine(_root, "single"), extraCFlags, cancellation);
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
        File.Copy(Path.Combine(_root, "single", objectPath), destination, overwrite: true);
    }

    /// <summary>
    /// Compiles several objects in one make invocation (kbuild runs them in parallel) and copies each to the
    /// same relative path under <paramref name="destinationDirectory"/>.
    /// </summary>
    public Task CompileAllAsync(IReadOnlyList<string> objectPaths, string destinationDirectory, string? extraCFlags,
        CancellationToken cancellation = default) =>
        CompileAsync([.. objectPaths.Select(o => (o, o))], destinationDirectory, extraCFlags, cancellation);

    /// <summary>
    /// Compiles translation units as the Makefiles that list them do (a unit listed from another directory
    /// through a relative path is made by that name) and copies each object to its own path under
    /// <paramref name="destinationDirectory"/>.
    /// </summary>
    public Task CompileUnitsAsync(IReadOnlyList<Units.TranslationUnit> units, string destinationDirectory,
        string? extraCFlags, CancellationToken cancellation = default) =>
        CompileAsync([.. units.Select(u => (u.MakeGoal, u.ObjectPath))], destinationDirectory, extraCFlags,
            cancellation);

    /// <summary>
    /// Compiles as many of the units as compile (<c>make -k</c>: one unit's error does not stop the others), copies
    /// those, and returns the units that did not compile, each with its own compiler errors. Many fixes' units in one
    /// make cost one pass over kbuild's Makefiles instead of one per fix.
    /// </summary>
    /// <param name="onCompiled">Called with the number of units compiled so far, as kbuild reports each one.</param>
    public async Task<IReadOnlyList<UnitCompileFailure>> CompileUnitsKeepGoingAsync(
        IReadOnlyList<Units.TranslationUnit> units,
        string destinationDirectory, string? extraCFlags, CancellationToken cancellation = default,
        Action<int>? onCompiled = null)
    {
        // make without a goal would build the whole kernel.
        if (units.Count == 0) return [];
        var count = 0;
        var goals = units.Select(u => u.ObjectPath).ToHashSet(StringComparer.Ordinal);
        // kbuild's short log names each object it compiles: "  CC [M]  fs/fat/dir.o". Only the units asked for count:
        // with changed headers, make also rebuilds other objects (a driver's helper object, a generated file).
        void Count(string line)
        {
            if (onCompiled is not null && line.StartsWith("  CC ", StringComparison.Ordinal)
                && goals.Contains(line[(line.LastIndexOf(' ') + 1)..].Trim()))
                onCompiled(Interlocked.Increment(ref count));
        }
        var result = await MakeAsync([.. units.Select(u => (u.MakeGoal, u.ObjectPath))], extraCFlags, keepGoing: true,
            cancellation, Count);
        BuildInterruption.ThrowIfInterrupted(result, $"compiling {units.Count} unit(s)");
        // Only what this make wrote counts: an object in the shared tree below is not this build's.
        var compiled = result.Succeeded ? units
            : [.. units.Where(u => File.Exists(Path.Combine(ChangesDirectory, u.ObjectPath))
            && File.Exists(Path.Combine(ChangesDirectory, ExportedSymbolVersions.CommandFile(u.ObjectPath))))];
        CopyOut([.. compiled.Select(u => u.ObjectPath)], destinationDirectory);
        var errors = KeepGoingOutput.ErrorsByObject(result.StandardOutput);
        return [.. units.Except(compiled).Select(u => new UnitCompileFailure(u,
            (errors.GetValueOrDefault(u.ObjectPath) ?? errors.GetValueOrDefault(u.MakeGoal)) is { } text
                ? CompileFailure([u.ObjectPath], text) : null))];
    }

    private async Task CompileAsync(IReadOnlyList<(string Goal, string ObjectPath)> targets,
        string destinationDirectory, string? extraCFlags, CancellationToken cancellation)
    {
        var result = await MakeAsync(targets, extraCFlags, keepGoing: false, cancellation);
        BuildInterruption.ThrowIfInterrupted(result,
            $"compiling {string.Join(", ", targets.Select(t => t.ObjectPath))}");
        if (!result.Succeeded)
            throw new ModuleBuildException(
                CompileFailure([.. targets.Select(t => t.ObjectPath)], result.StandardError + result.StandardOutput));
        CopyOut([.. targets.Select(t => t.ObjectPath)], destinationDirectory);
    }

    /// <summary>What a user reads when units do not compile: the objects and the end of the compiler's
    /// output.</summary>
    public static string CompileFailure(IReadOnlyList<string> objectPaths, string output) =>
        $"compiling {string.Join(", ", objectPaths)} failed:\n" +
        string.Join('\n', output.Split('\n').Where(l => l.Length > 0).TakeLast(30));

    private Task<CommandResult> MakeAsync(IReadOnlyList<(string Goal, string ObjectPath)> targets, string? extraCFlags,
        bool keepGoing, CancellationToken cancellation, Action<string>? onOutputLine = null)
    {
        foreach (var (_, objectPath) in targets) KernelSourceTree.CheckObjectPath(objectPath);
        // An empty KCFLAGS is still a change of command line, so the distribution's build is recompiled after a flagged
        // one.
        List<string> arguments = [$"-j{Environment.ProcessorCount}", .. targets.Select(t => t.Goal),
            $"KCFLAGS={extraCFlags ?? ""}"];
        if (!keepGoing) return RunAsync("make", arguments, cancellation, onOutputLine);
        // Keeping going, each target's output is written in one piece (--output-sync) into one stream, so that every
        // unit's errors follow its own "CC" line and can be told apart from the others' (see KeepGoingOutput).
        return RunAsync("sh", ["-c", "exec make \"$@\" 2>&1", "make", "-k", "--output-sync=target", .. arguments],
            cancellation, onOutputLine);
    }

    private void CopyOut(IReadOnlyList<string> objectPaths, string destinationDirectory)
    {
        foreach (var objectPath in objectPaths)
        {
            var destination = Path.Combine(destinationDirectory, objectPath);
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
            File.Copy(Resolve(objectPath), destination, overwrite: true);
            // kbuild's command file carries the symbol versions genksyms computed for the object's exports.
            var commandFile = ExportedSymbolVersions.CommandFile(objectPath);
            if (File.Exists(Resolve(commandFile)))
                File.Copy(Resolve(commandFile), Path.Combine(destinationDirectory, commandFile), overwrite: true);
        }
    }

    /// <summary>Applies a patch to this build's view of the tree; the shared tree is untouched.</summary>
    public async Task ApplyAsync(SourcePatch patch, CancellationToken cancellation = default)
    {
        var file = Path.Combine(_root, "patch-" + patch.Sha256[..12] + ".patch");
        await File.WriteAllTextAsync(file, patch.Text, cancellation);
        var result = await RunAsync("patch", ["-p1", "--batch", "--no-backup-if-mismatch", "-i", file], cancellation);
        if (!result.Succeeded)
            throw new SourcePatchException(
                $"{patch.Name} does not apply to the source of {Tree.Target.Release}:\n{result.StandardOutput.Trim()}");
    }

    public ValueTask DisposeAsync()
    {
        System.IO.Directory.Delete(_root, recursive: true);
        return ValueTask.CompletedTask;
    }
}
