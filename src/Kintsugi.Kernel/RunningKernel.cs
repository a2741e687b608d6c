namespace Kintsugi.Kernel;

/// <summary>Facts about the kernel this process runs on, read from /proc and /sys.</summary>
public static class RunningKernel
{
    public static KernelRelease Release => KernelRelease.Parse(File.ReadAllText("/proc/sys/kernel/osrelease"));

    /// <summary>The version string <c>uname -v</c> prints (for Debian it names the package version).</summary>
    public static string Version => File.ReadAllText("/proc/sys/kernel/version").Trim();

    /// <summary>The distribution package version Debian names in the version string ("... Debian 6.1.158-1 (...)"), or
    /// null.</summary>
    public static string? PackageVersion
    {
        get => PackageVersionIn(Version);
    }

    /// <summary>The package version a Debian kernel version string names, or null for another distribution's.</summary>
    public static string? PackageVersionIn(string version)
    {
        var marker = version.IndexOf("Debian ", StringComparison.Ordinal);
        if (marker < 0) return null;
        var start = marker + "Debian ".Length;
        var end = version.IndexOf(' ', start);
        return end < 0 ? version[start..] : version[start..end];
    }

    /// <summary>The build-id of the running vmlinux, from the kernel's own notes.</summary>
    public static BuildId? BuildId
    {
        get
        {
            try { return Kintsugi.BuildId.FromNotes(File.ReadAllBytes("/sys/kernel/notes")); }
            catch (IOException) { return null; }
            catch (UnauthorizedAccessException) { return null; }
        }
    }

    /// <summary>This boot's random id (/proc/sys/kernel/random/boot_id): tells "earlier in this boot" from "before a
    /// reboot or crash".</summary>
    public static string? BootId => File.Exists(BootIdPath) ? File.ReadAllText(BootIdPath).Trim() : null;

    private const string BootIdPath = "/proc/sys/kernel/random/boot_id";

    public static string CommandLine => File.ReadAllText("/proc/cmdline").Trim();

    public static Taint Taint => new(ulong.Parse(File.ReadAllText("/proc/sys/kernel/tainted").Trim()));

    public static bool SupportsLivepatch => Directory.Exists(LivepatchSysfs.Root);

    public static bool IsModuleLoaded(ModuleName name) => Directory.Exists($"/sys/module/{name}");
}

/// <summary>The kernel's taint mask (/proc/sys/kernel/tainted), with the flags that matter to livepatching.</summary>
public readonly record struct Taint(ulong Mask)
{
    // Bits from the kernel's Documentation/admin-guide/tainted-kernels.rst.
    private static readonly (int Bit, char Letter, string Meaning, bool Benign)[] Flags =
    [
        (0, 'P', "proprietary module", true), (1, 'F', "module force-loaded", false),
        (2, 'S', "out-of-spec system", true),
        (3, 'R', "module force-unloaded", false), (4, 'M', "machine check", false), (5, 'B', "bad page", false),
        (6, 'U', "user-requested taint", true), (7, 'D', "kernel died (oops or BUG)", false),
        (8, 'A', "ACPI table overridden", true),
        (9, 'W', "kernel warning", false), (10, 'C', "staging driver", true), (11, 'I', "firmware workaround", true),
        (12, 'O', "out-of-tree module", true), (13, 'E', "unsigned module", true), (14, 'L', "soft lockup", false),
        (15, 'K', "live patched", true), (16, 'X', "auxiliary", true), (17, 'T', "struct randomization", true),
        (18, 'N', "in-kernel test", true),
    ];

    /// <summary>Flags that indicate a problem (a warning, an oops, a lockup), as opposed to ones a livepatch load
    /// sets.</summary>
    public IReadOnlyList<string> ProblemsAddedSince(Taint before)
    {
        var added = Mask & ~before.Mask;
        return Flags.Where(f => !f.Benign && (added & (1UL << f.Bit)) != 0).Select(f => $"{f.Letter} ({f.Meaning})")
            .ToList();
    }

    public string Letters
    {
        get
        {
            var mask = Mask;
            return new(Flags.Where(f => (mask & (1UL << f.Bit)) != 0).Select(f => f.Letter).ToArray());
        }
    }

    public override string ToString() => Mask == 0 ? "0" : $"{Mask} ({Letters})";
}
