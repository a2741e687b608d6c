using Kintsugi.Testing;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// The two Debian packages built once per test run by scripts/build-packages.sh, in two revisions (1 and 2)
/// to test an upgrade, and a fresh Debian 12 root file system to install them in (scripts/debian-root.sh).
/// </summary>
public sealed class DebianPackages : IAsyncLifetime
{
    public string Directory { get; } = System.IO.Directory.CreateTempSubdirectory("kintsugi-deb-").FullName;

    public string Agent(int revision) => Path.Combine(Directory, $"r{revision}", $"kintsugi_{Version}-{revision}_amd64.deb");
    public string Server(int revision) => Path.Combine(Directory, $"r{revision}", $"kintsugi-server_{Version}-{revision}_amd64.deb");

    public static string Version => "0.1.0";

    public async Task InitializeAsync()
    {
        foreach (var revision in new[] { 1, 2 })
        {
            var built = await ExternalCommand.RunAsync(Path.Combine(Repository.Root, "scripts", "build-packages.sh"), [Path.Combine(Directory, $"r{revision}")],
                environment: new Dictionary<string, string> { ["KINTSUGI_DEB_REVISION"] = revision.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            if (!built.Succeeded) throw new InvalidOperationException($"build-packages.sh failed ({built.ExitCode}):\n{built.StandardError}\n{built.StandardOutput}");
        }
    }

    public Task DisposeAsync()
    {
        System.IO.Directory.Delete(Directory, recursive: true);
        return Task.CompletedTask;
    }
}

/// <summary>A Debian 12 root file system to install packages into with dpkg, in a chroot with its own /proc.</summary>
internal sealed class DebianRoot : IDisposable
{
    public string Path { get; } = System.IO.Directory.CreateTempSubdirectory("kintsugi-root-").FullName;

    private DebianRoot() { }

    public static async Task<DebianRoot> CreateAsync()
    {
        var root = new DebianRoot();
        var made = await ExternalCommand.RunAsync(System.IO.Path.Combine(Repository.Root, "scripts", "debian-root.sh"), [root.Path]);
        if (!made.Succeeded) throw new InvalidOperationException($"debian-root.sh failed ({made.ExitCode}):\n{made.StandardError}");
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
        var script = $"mount --make-rprivate / && mount -t proc proc {Path}/proc && mount --rbind /dev {Path}/dev && exec chroot {Path} \"$@\"";
        return ExternalCommand.RunAsync("unshare", ["--mount", "sh", "-c", script, "sh", .. command],
            environment: new Dictionary<string, string> { ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin", ["DEBIAN_FRONTEND"] = "noninteractive" });
    }

    public async Task<string> SucceedAsync(params string[] command)
    {
        var result = await RunAsync(command);
        Assert.True(result.Succeeded, $"{string.Join(' ', command)} exited {result.ExitCode}:\n{result.StandardError}\n{result.StandardOutput}");
        return result.StandardOutput;
    }

    public void Dispose()
    {
        // Nothing stays mounted: the mounts lived in each command's own namespace.
        System.IO.Directory.Delete(Path, recursive: true);
    }
}
