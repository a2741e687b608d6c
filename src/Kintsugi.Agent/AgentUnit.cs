using Kintsugi.Kernel;

namespace Kintsugi.Agent;

/// <summary>The systemd unit that runs the agent (and, through it, boot re-application).</summary>
public static class AgentUnit
{
    public const string Name = "kintsugi-agent.service";

    public static string Text(string command, string configPath) => $"""
        [Unit]
        Description=Kintsugi agent: apply signed kernel livepatches for this exact kernel, report the state
        Documentation=https://kintsugi.invalid/docs/cli.md
        After=local-fs.target network-online.target systemd-modules-load.service
        Wants=network-online.target
        ConditionKernelCommandLine=!kintsugi.enable=0

        [Service]
        Type=exec
        ExecStart={command} agent run --config {configPath}
        Restart=on-failure
        RestartSec=10s
        # 7: the kill switch is set, which is not a failure.
        SuccessExitStatus=7
        RestartPreventExitStatus=7

        [Install]
        WantedBy=multi-user.target
        """ + "\n";

    /// <summary>Writes and enables the unit (the enablement symlink systemctl would make).</summary>
    public static string Install(MachinePaths paths, string command, string configPath)
    {
        var unitPath = Path.Combine(paths.SystemdUnits, Name);
        AtomicFile.WriteText(unitPath, Text(command, configPath));
        var wants = Path.Combine(paths.SystemdUnits, "multi-user.target.wants");
        Directory.CreateDirectory(wants);
        var link = Path.Combine(wants, Name);
        if (!File.Exists(link) && new FileInfo(link).LinkTarget is null) File.CreateSymbolicLink(link, unitPath);
        return unitPath;
    }

    public static void Uninstall(MachinePaths paths)
    {
        File.Delete(Path.Combine(paths.SystemdUnits, "multi-user.target.wants", Name));
        File.Delete(Path.Combine(paths.SystemdUnits, Name));
    }
}
