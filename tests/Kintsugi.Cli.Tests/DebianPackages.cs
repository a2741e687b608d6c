using Kintsugi.Testing;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// The two Debian packages built once per test run by scripts/build-packages.sh, in two revisions (1 and 2)
/// to test an upgrade; shared by the package specification and the systemd guest (a collection fixture), and built
/// only when one of them is enabled. <c>KINTSUGI_TEST_PACKAGES=DIR</c> takes them from DIR/r1 and DIR/r2 instead
/// (packages this script built before: one build of both revisions takes about 20 minutes at a load of 40).
/// </summary>
public sealed class DebianPackages : IAsyncLifetime
{
    public const string Collection = "Debian packages";

    private static readonly string? Prebuilt =
        Environment.GetEnvironmentVariable("KINTSUGI_TEST_PACKAGES") is { Length: > 0 } d ? d : null;

    private readonly TemporaryDirectory? _built = Prebuilt is null ? new TemporaryDirectory() : null;

    public string Directory => Prebuilt ?? _built!.Path;

    public string Agent(int revision) =>
        Path.Combine(Directory, $"r{revision}", $"kintsugi_{Version}-{revision}_amd64.deb");
    public string Server(int revision) =>
        Path.Combine(Directory, $"r{revision}", $"kintsugi-server_{Version}-{revision}_amd64.deb");

    public static string Version => "0.1.0";

    public async Task InitializeAsync()
    {
        // xUnit makes class fixtures even when every test of the class is skipped.
        if (!DebianPackageFactAttribute.Enabled && !SystemdGuestFactAttribute.Enabled || Prebuilt is not null) return;
        foreach (var revision in new[] { 1, 2 })
        {
            var built = await ExternalCommand.RunAsync(Path.Combine(Repository.Root, "scripts", "build-packages.sh"),
                [Path.Combine(Directory, $"r{revision}")],
                environment: new Dictionary<string, string>
                {
                    ["KINTSUGI_DEB_REVISION"] = revision.ToString(
                System.Globalization.CultureInfo.InvariantCulture)
                });
            if (!built.Succeeded) throw new InvalidOperationException($"build-packages.sh failed ({built.ExitCode}):" +
                $"\n{built.StandardError}\n{built.StandardOutput}");
        }
    }

    public Task DisposeAsync()
    {
        _built?.Dispose();
        return Task.CompletedTask;
    }
}

[CollectionDefinition(DebianPackages.Collection)]
public sealed class DebianPackagesCollection : ICollectionFixture<DebianPackages>;
