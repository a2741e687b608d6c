using Kintsugi.Kernel;

namespace Kintsugi.Cli;

/// <summary>
/// Enabling a unit the Debian package installed in /lib/systemd/system: the symlink systemctl enable makes.
/// </summary>
internal static class AgentUnitLinks
{
    public static void Enable(MachinePaths paths, string unit)
    {
        var wants = Path.Combine(paths.SystemdUnits, "multi-user.target.wants");
        Directory.CreateDirectory(wants);
        var link = Path.Combine(wants, unit);
        if (!File.Exists(link) && new FileInfo(link).LinkTarget is null)
            File.CreateSymbolicLink(link, Path.Combine(Systemctl.PackagedUnits, unit));
    }
}
