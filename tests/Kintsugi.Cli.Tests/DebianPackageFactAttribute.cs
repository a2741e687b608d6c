namespace Kintsugi.Cli.Tests;

/// <summary>
/// A test of the built Debian packages, run only with <c>KINTSUGI_PACKAGE_TESTS=1</c>: building them publishes the
/// self-contained server and packs both packages twice (revisions 1 and 2), which takes minutes (docs/benchmarks.md).
/// </summary>
public sealed class DebianPackageFactAttribute : FactAttribute
{
    public const string Variable = "KINTSUGI_PACKAGE_TESTS";

    public static bool Enabled => Environment.GetEnvironmentVariable(Variable) == "1";

    public DebianPackageFactAttribute()
    {
        if (!Enabled) Skip = $"builds and installs the Debian packages (minutes): run with {Variable}=1";
    }
}
