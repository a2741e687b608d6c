namespace Kintsugi.Testing;

/// <summary>
/// A private copy of the lab's Debian 12 root disk with systemd (scripts/lab-systemd-root.sh, made once per machine and
/// cached by content), for guests that boot with systemd as PID 1 (<see cref="Kintsugi.Lab.LabRunSpec.RootDisk"/>). The
/// copy keeps what one boot installs for the next, as a real machine's disk does.
/// </summary>
public sealed class SystemdRootDisk : IDisposable
{
    private readonly TemporaryDirectory _directory = new();

    public string Path => _directory["root.img"];

    private SystemdRootDisk() { }

    /// <param name="variant">null for the base image; "cloud-init" adds Debian's cloud-init (NoCloud).</param>
    public static async Task<SystemdRootDisk> CreateAsync(string? variant = null)
    {
        var script = System.IO.Path.Combine(Repository.Root, "scripts", "lab-systemd-root.sh");
        var made = await ExternalCommand.RunAsync(script, variant is null ? [] : [variant]);
        if (!made.Succeeded)
            throw new InvalidOperationException($"lab-systemd-root.sh failed ({made.ExitCode}):\n{made.StandardError}");
        var disk = new SystemdRootDisk();
        // Sparse: the image is 3 GiB, a few hundred MiB of it written.
        var copied = await ExternalCommand.RunAsync("cp", ["--sparse=always", made.StandardOutput.Trim(), disk.Path]);
        if (!copied.Succeeded)
        {
            disk.Dispose();
            throw new InvalidOperationException($"copying the root disk failed: {copied.StandardError}");
        }
        return disk;
    }

    public void Dispose() => _directory.Dispose();
}
