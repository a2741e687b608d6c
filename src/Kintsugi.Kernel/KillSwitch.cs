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
}

/// <summary>Where the machine side keeps its files. Production uses <see cref="Default"/>.</summary>
public sealed record MachinePaths(string State, string Config, string Runtime, string SystemdUnits)
{
    public static MachinePaths Default { get; } = new("/var/lib/kintsugi", "/etc/kintsugi", "/run/kintsugi", "/etc/systemd/system");
}
