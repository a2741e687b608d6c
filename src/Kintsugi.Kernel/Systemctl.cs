namespace Kintsugi.Kernel;

/// <summary>
/// The service manager, when systemd runs this machine (<c>/run/systemd/system</c> exists): units written or
/// removed are followed by <c>daemon-reload</c>, and enabling starts them (<c>enable --now</c>). Without
/// systemd (a container, a chroot, the lab's /init) the enablement symlink is the whole job.
/// </summary>
public static class Systemctl
{
    /// <summary>Where a package installs units: a unit here is used as it is, not rewritten into /etc.</summary>
    public const string PackagedUnits = "/lib/systemd/system";

    public static bool Running => Directory.Exists("/run/systemd/system");

    /// <summary>Whether the Debian package's copy of <paramref name="unit"/> is installed.</summary>
    public static bool Packaged(string unit) => File.Exists(Path.Combine(PackagedUnits, unit));

    public static void DaemonReload() => Run("daemon-reload");

    public static void EnableNow(string unit) => Run("enable", "--now", unit);

    public static void DisableNow(string unit) => Run("disable", "--now", unit);

    public static void Restart(string unit) => Run("restart", unit);

    /// <summary>"active", "inactive", "failed", ... as systemctl is-active prints it; "unknown" without
    /// systemd.</summary>
    public static string ActiveState(string unit) =>
        Running ? ExternalCommand.Run("systemctl", "is-active", unit).StandardOutput.Trim() is { Length: > 0 } state
        ? state : "unknown" : "unknown";

    private static void Run(params string[] arguments)
    {
        var result = ExternalCommand.Run("systemctl", arguments);
        if (!result.Succeeded)
            throw new LivepatchException($"systemctl {string.Join(' ', arguments)} failed: " +
                $"{result.StandardError.Trim()}", ExitCode.Environment);
    }
}
