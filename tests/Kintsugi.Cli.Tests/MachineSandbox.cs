using Kintsugi.Testing;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// Runs the real kintsugi binary as root on this host, in a private mount namespace whose /etc, /var/lib and
/// /run are copy-on-write overlays: the commands that change the machine (the kill switch, units, the
/// store) really write their files, and the test reads them from the overlays' upper directories, while
/// the host itself is never touched.
/// </summary>
internal sealed class MachineSandbox : IDisposable
{
    private static readonly string[] Overlaid = ["/etc", "/var/lib", "/run"];

    private readonly TemporaryDirectory _root = new();

    public string Root => _root.Path;

    public MachineSandbox()
    {
        foreach (var dir in Overlaid)
        {
            Directory.CreateDirectory(Upper(dir));
            Directory.CreateDirectory(Work(dir));
        }
    }

    private string Upper(string dir) => Path.Combine(Root, "upper" + dir.Replace('/', '_'));
    private string Work(string dir) => Path.Combine(Root, "work" + dir.Replace('/', '_'));

    /// <summary>Where a file the commands wrote under <paramref name="path"/> (absolute, below an overlaid directory)
    /// is kept.</summary>
    public string Written(string path)
    {
        var dir = Overlaid.Single(d => path.StartsWith(d + "/", StringComparison.Ordinal));
        return Path.Combine(Upper(dir), path[(dir.Length + 1)..]);
    }

    /// <summary>Writes a file the commands will see at <paramref name="path"/>.</summary>
    public void Put(string path, string contents)
    {
        var file = Written(path);
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllText(file, contents);
    }

    public Task<CommandResult> RunAsync(params string[] arguments) =>
        ExternalCommand.RunAsync("unshare", CommandLine(arguments));

    /// <summary>unshare's arguments that run kintsugi with <paramref name="arguments"/> in the sandbox (exec: the
    /// process keeps unshare's pid).</summary>
    public IReadOnlyList<string> CommandLine(params string[] arguments)
    {
        var mounts = string.Join(" && ", Overlaid.Select(d =>
            $"mount -t overlay overlay -o lowerdir={d},upperdir={Upper(d)},workdir={Work(d)} {d}"));
        var script = $"mount --make-rprivate / && {mounts} && exec \"$0\" \"$@\"";
        return ["--mount", "sh", "-c", script, Repository.KintsugiBinary, .. arguments];
    }

    public void Dispose()
    {
        // overlayfs leaves work directories mode 000: make them deletable.
        foreach (var dir in Overlaid) ExternalCommand.Run("chmod", "-R", "u+rwx", Work(dir));
        _root.Dispose();
    }
}
