using Kintsugi.Kernel;

namespace Kintsugi.Agent;

/// <summary>The systemd unit that runs the agent (and, through it, boot re-application).</summary>
public static class AgentUnit
{
    public const string Name = "kintsugi-agent.service";

    public static string Text(string command, string configPath) =>
        UnitTemplate.Render(typeof(AgentUnit).Assembly, Name, UnitTemplate.Words(command), new Dictionary<string,
        string>
        { ["@CONFIG@"] = configPath });

    /// <summary>Writes and enables the unit (the enablement symlink systemctl would make).</summary>
    public static string Install(MachinePaths paths, string command, string configPath) =>
        UnitTemplate.Install(paths, Name, Text(command, configPath));

    /// <summary>The enablement symlink systemctl enable makes, for machines where systemd is not running.</summary>
    public static void Enable(MachinePaths paths, string unitPath) => UnitTemplate.Enable(paths, Name, unitPath);

    public static void Uninstall(MachinePaths paths) => UnitTemplate.Uninstall(paths, Name);
}
