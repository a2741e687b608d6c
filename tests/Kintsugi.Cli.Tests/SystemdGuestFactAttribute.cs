namespace Kintsugi.Cli.Tests;

/// <summary>
/// A test in a lab guest that boots a Debian root disk with systemd as PID 1, run only with
/// <c>KINTSUGI_SYSTEMD_GUEST=1</c>: it builds the Debian packages and boots systemd twice under emulation (minutes;
/// docs/benchmarks.md).
/// </summary>
public sealed class SystemdGuestFactAttribute : FactAttribute
{
    public const string Variable = "KINTSUGI_SYSTEMD_GUEST";

    public static bool Enabled => Environment.GetEnvironmentVariable(Variable) == "1";

    public SystemdGuestFactAttribute()
    {
        if (!Enabled) Skip = $"boots systemd in a lab guest and installs the package (minutes): run with {Variable}=1";
    }
}
