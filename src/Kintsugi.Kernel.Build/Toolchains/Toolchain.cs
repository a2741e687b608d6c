namespace Kintsugi.Kernel.Build.Toolchains;

/// <summary>
/// Where the commands of a kernel build run: on the host, or chrooted into a build root made of the target
/// release's own packages. Either way each command gets a private mount namespace, so nothing it mounts
/// (a build's overlay over the shared tree, the directories a build root must see) outlives it.
/// </summary>
public abstract class Toolchain
{
    public static Toolchain Host { get; } = new HostToolchain();

    /// <summary>What users read: "host" or "Debian 11 (bullseye) build root ...".</summary>
    public abstract string Description { get; }

    /// <summary>What a prepared tree records: a tree prepared with another toolchain is prepared again.</summary>
    public abstract string Identity { get; }

    /// <summary>
    /// Runs <paramref name="tool"/> in <paramref name="workingDirectory"/>. <paramref name="visible"/> are the
    /// host directories the command reads or writes (the kernel's cache directory, an output directory); with
    /// <paramref name="overlay"/> an overlay is first mounted at its mount point, as a build's private view of a tree.
    /// <paramref name="onOutputLine"/> sees each line of output as it comes (progress of a long make).
    /// </summary>
    public abstract Task<CommandResult> RunAsync(string tool, IReadOnlyList<string> arguments, string workingDirectory,
        IReadOnlyList<string> visible, OverlayMount? overlay = null, CancellationToken cancellation = default,
        Action<string>? onOutputLine = null);

    public override string ToString() => Description;

    /// <summary>
    /// The search path of every build command, as on Debian's build daemons. kbuild's configuration asks the tools it
    /// finds (rustc, bindgen) for their versions; a user's own ~/.cargo/bin would change the distribution's .config.
    /// </summary>
    internal const string BuildPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    private protected static IReadOnlyDictionary<string, string> BuildEnvironment { get; } =
        new Dictionary<string, string> { ["PATH"] = BuildPath };

    private sealed class HostToolchain : Toolchain
    {
        public override string Description => "the host's own compiler";
        public override string Identity => "host";

        public override Task<CommandResult> RunAsync(string tool, IReadOnlyList<string> arguments,
            string workingDirectory,
            IReadOnlyList<string> visible, OverlayMount? overlay = null, CancellationToken cancellation = default,
            Action<string>? onOutputLine = null)
        {
            if (overlay is null)
                return ExternalCommand.RunAsync(tool, arguments, workingDirectory, BuildEnvironment, onOutputLine,
                    cancellation);
            const string script = "mount -t overlay overlay -o \"$1\" \"$2\" && cd \"$3\" && shift 3 && exec \"$@\"";
            return ExternalCommand.RunAsync("unshare",
                ["--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
                overlay.Options, overlay.MountPoint, workingDirectory, tool, .. arguments],
                    environment: BuildEnvironment,
                onOutputLine: onOutputLine, cancellation: cancellation);
        }
    }
}

/// <summary>An overlay mounted over <paramref name="MountPoint"/> for the duration of one command.</summary>
public sealed record OverlayMount(string LowerDirectory, string UpperDirectory, string WorkDirectory)
{
    public string MountPoint => LowerDirectory;
    public string Options => $"lowerdir={LowerDirectory},upperdir={UpperDirectory},workdir={WorkDirectory}";
}

/// <summary>
/// A root filesystem of one Debian release with its compiler, binutils and kernel build tools, in the cache.
/// Commands run chrooted into it; the host directories they use are bind-mounted at the same paths, because
/// kbuild and objtool record absolute paths when a tree is prepared.
/// </summary>
public sealed class BuildRootToolchain(string root, string description, string identity) : Toolchain
{
    public string Root { get; } = root;
    public override string Description => description;
    public override string Identity => identity;

    // $1 root, $2 overlay options or "", $3 overlay mount point, $4 working directory, $5 count of visible
    // directories, then the directories, then the command. Exit status 125 means the setup failed.
    private const string Script = """
        root=$1; overlay=$2; lower=$3; dir=$4; n=$5; shift 5
        if [ -n "$overlay" ]; then mount -t overlay overlay -o "$overlay" "$lower" || exit 125; fi
        while [ "$n" -gt 0 ]; do
          mkdir -p "$root$1" && mount --rbind "$1" "$root$1" || exit 125
          shift; n=$((n - 1))
        done
        mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" || exit 125
        exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$dir" "$@"
        """;

    public override Task<CommandResult> RunAsync(string tool, IReadOnlyList<string> arguments, string workingDirectory,
        IReadOnlyList<string> visible, OverlayMount? overlay = null, CancellationToken cancellation = default,
        Action<string>? onOutputLine = null)
    {
        // A directory inside another visible one is already there (rbind carries the overlay mounted below it).
        // The root directory itself is never bound (it would cover the build root with the host's).
        var directories = visible.Append(workingDirectory).Concat(overlay is null ? [] : [overlay.MountPoint])
            .Select(d => Path.GetFullPath(d).TrimEnd('/')).Where(d => d.Length > 0).Distinct().OrderBy(d => d.Length)
            .ToList();
        var outermost = directories.Where(d =>
            !directories.Any(o => o != d && d.StartsWith(o + "/", StringComparison.Ordinal))).ToList();
        foreach (var directory in outermost) Directory.CreateDirectory(directory);
        return ExternalCommand.RunAsync("unshare",
            ["--mount", "--propagation", "private", "--", "sh", "-c", Script, "sh",
            Root, overlay?.Options ?? "", overlay?.MountPoint ?? "", workingDirectory, outermost.Count.ToString(),
                .. outermost, tool, .. arguments],
            environment: BuildEnvironment,
            onOutputLine: onOutputLine, cancellation: cancellation);
    }
}
