namespace Kintsugi.Kernel;

/// <summary>The systemd unit that re-applies installed patches at every boot.</summary>
public static class SystemdUnit
{
    public const string Name = "kintsugi-kernel.service";

    public static string Text(string command) => $"""
        [Unit]
        Description=Kintsugi: re-apply installed kernel livepatches
        Documentation=https://kintsugi.invalid/docs/cli.md
        After=local-fs.target systemd-modules-load.service
        ConditionKernelCommandLine=!kintsugi.enable=0

        [Service]
        # exec: boot goes on while the loaded patches settle; a crash in that window quarantines them.
        Type=exec
        RemainAfterExit=yes
        ExecStart={command} kernel boot
        # 7: the kill switch is set, which is not a failure of the unit.
        SuccessExitStatus=7

        [Install]
        WantedBy=multi-user.target
        """ + "\n";

    /// <summary>Writes and enables the unit (the enablement symlink systemctl would make).</summary>
    public static void Install(MachinePaths paths, string command)
    {
        var unitPath = Path.Combine(paths.SystemdUnits, Name);
        AtomicFile.WriteText(unitPath, Text(command));
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

    /// <summary>How this very program is started again from a unit: the single-file binary, or dotnet with the CLI assembly.</summary>
    public static string CurrentCommand()
    {
        var process = Environment.ProcessPath ?? "kintsugi";
        if (Path.GetFileNameWithoutExtension(process) == "dotnet")
            return $"{process} {Path.Combine(AppContext.BaseDirectory, "kintsugi.dll")}";
        return process;
    }
}
