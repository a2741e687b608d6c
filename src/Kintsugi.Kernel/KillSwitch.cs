namespace Kintsugi.Kernel;

/// <summary>
/// The out-of-band way to stop automatic patching, for a machine that crashes after a patch load:
/// <c>kintsugi.enable=0</c> on the kernel command line (set from the boot loader) or the file
/// <c>/etc/kintsugi/disabled</c>.
/// </summary>
public static class KillSwitch
{
    public const string CommandLineParameter = "kintsugi.enable=0";

    public static string DisableFile(MachinePaths paths) => Path.Combine(paths.Config, "disabled");

    /// <summary>Why automatic patching is off, or null when it is on.</summary>
    public static string? Reason(MachinePaths paths)
    {
        var commandLine = File.Exists("/proc/cmdline") ? RunningKernel.CommandLine : "";
        if (commandLine.Split(' ').Contains(CommandLineParameter))
            return $"the kernel command line has {CommandLineParameter}";
        var file = DisableFile(paths);
        return File.Exists(file) ? $"{file} exists" : null;
    }

    /// <summary>Sets the file switch (<c>kintsugi disable</c>); false when it was already set.</summary>
    public static bool Disable(MachinePaths paths, string reason)
    {
        var file = DisableFile(paths);
        if (File.Exists(file)) return false;
        AtomicFile.WriteText(file,
            $"# written by kintsugi disable at {DateTimeOffset.UtcNow:u}; kintsugi enable removes it\n{reason}\n");
        return true;
    }

    /// <summary>Clears the file switch (<c>kintsugi enable</c>); false when it was not set. The command line cannot be
    /// cleared from here.</summary>
    public static bool Enable(MachinePaths paths)
    {
        var file = DisableFile(paths);
        if (!File.Exists(file)) return false;
        File.Delete(file);
        AtomicFile.SyncDirectory(paths.Config);
        return true;
    }
}

/// <summary>Where the machine side keeps its files. Production uses <see cref="Default"/>.</summary>
public sealed record MachinePaths(string State, string Config, string Runtime, string SystemdUnits)
{
    public static MachinePaths Default { get; } =
        new("/var/lib/kintsugi", "/etc/kintsugi", "/run/kintsugi", "/etc/systemd/system");
}
