using Kintsugi.Kernel;

namespace Kintsugi.Agent;

/// <summary>The systemd unit that runs the agent (and, through it, boot re-application).</summary>
public static class AgentUnit
{
    public const string Name = "kintsugi-agent.service";

    public static string Text(string command, string configPath) =>
        UnitTemplate.Render(typeof(AgentUnit).Assembly, Name, UnitTemplate.Words(command), new Dictionary<string, string> { ["@CONFIG@"] = configPath });

    /// <summary>Writes and enables the unit (the enablement symlink systemctl would make).</summary>
    public static string Install(MachinePaths paths, string command, string configPath)
    {
        var unitPath = Path.Combine(paths.SystemdUnits, Name);
        AtomicFile.WriteText(unitPath, Text(command, configPath));
        Enable(paths, unitPath);
        return unitPath;
    }

    /// <summary>The enablement symlink systemctl enable makes, for machines where systemd is not running.</summary>
    public static void Enable(MachinePaths paths, string unitPath)
    {
        var wants = Path.Combine(paths.SystemdUnits, "multi-user.target.wants");
        Directory.CreateDirectory(wants);
        var link = Path.Combine(wants, Name);
        if (!File.Exists(link) && new FileInfo(link).LinkTarget is null) File.CreateSymbolicLink(link, unitPath);
    }

    public static void Uninstall(MachinePaths paths)
    {
        File.Delete(Path.Combine(paths.SystemdUnits, "multi-user.target.wants", Name));
        File.Delete(Path.Combine(paths.SystemdUnits, Name));
    }
}
