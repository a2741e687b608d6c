namespace Kintsugi.Testing;

/// <summary>A Debian 12 root file system to install packages into with dpkg, in a chroot with its own /proc.</summary>
public sealed class DebianRoot : IDisposable
{
    private readonly TemporaryDirectory _directory = new();

    public string Path => _directory.Path;

    private DebianRoot() { }

    public static async Task<DebianRoot> CreateAsync()
    {
        var root = new DebianRoot();
        var made = await ExternalCommand.RunAsync(System.IO.Path.Combine(Repository.Root, "scripts", "debian-root.sh"),
            [root.Path]);
        if (!made.Succeeded)
            throw new InvalidOperationException($"debian-root.sh failed ({made.ExitCode}):\n{made.StandardError}");
        return root;
    }

    /// <summary>A file inside the root, by its absolute path there.</summary>
    public string this[string path] => System.IO.Path.Combine(Path, path.TrimStart('/'));

    /// <summary>Copies a host file into the root's /tmp and returns its path there.</summary>
    public string Put(string hostFile)
    {
        var inside = "/tmp/" + System.IO.Path.GetFileName(hostFile);
        File.Copy(hostFile, this[inside], overwrite: true);
        return inside;
    }

    /// <summary>Runs a command in the chroot (a private mount namespace with /proc and /dev).</summary>
    public Task<CommandResult> RunAsync(params string[] command)
    {
        var script = $"mount --make-rprivate / && mount -t proc proc {Path}/proc && mount --rbind /dev {Path}/dev && " +
            $"exec chroot {Path} \"$@\"";
        return ExternalCommand.RunAsync("unshare", ["--mount", "sh", "-c", script, "sh", .. command],
            environment: new Dictionary<string,
            string>
            { ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin", ["DEBIAN_FRONTEND"] = "noninteractive" });
    }

    public async Task<string> SucceedAsync(params string[] command)
    {
        var result = await RunAsync(command);
        if (!result.Succeeded)
            throw new InvalidOperationException($"{string.Join(' ', command)} exited {result.ExitCode} in the Debian " +
                $"root:\n{result.StandardError}\n{result.StandardOutput}");
        return result.StandardOutput;
    }

    public void Dispose()
    {
        // Nothing stays mounted: the mounts lived in each command's own namespace.
        _directory.Dispose();
    }
}
