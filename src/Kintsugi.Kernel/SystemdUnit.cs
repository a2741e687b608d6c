namespace Kintsugi.Kernel;

/// <summary>The systemd unit that re-applies installed patches at every boot.</summary>
public static class SystemdUnit
{
    public const string Name = "kintsugi-kernel.service";

    public static string Text(string command) => UnitTemplate.Render(typeof(SystemdUnit).Assembly, Name,
        UnitTemplate.Words(command), new Dictionary<string, string>());

    /// <summary>Writes and enables the unit (the enablement symlink systemctl would make).</summary>
    public static void Install(MachinePaths paths, string command) => UnitTemplate.Install(paths, Name, Text(command));

    public static void Uninstall(MachinePaths paths) => UnitTemplate.Uninstall(paths, Name);

    /// <summary>How this very program is started again from a unit: the single-file binary, or dotnet with the CLI
    /// assembly.</summary>
    public static string CurrentCommand()
    {
        var process = Environment.ProcessPath ?? "kintsugi";
        if (Path.GetFileNameWithoutExtension(process) == "dotnet")
            return $"{process} {Path.Combine(AppContext.BaseDirectory, "kintsugi.dll")}";
        return process;
    }
}
