using System.Text.Json;
using Kintsugi.Bundles;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// kintsugi agent check: whether this machine runs the release meant for its exact kernel, as an exit code.
/// Offline mode on this host: bundles signed for the host's own release and build-id.
/// </summary>
public sealed class AgentCheckSpecification : IDisposable
{
    private readonly MachineSandbox _machine = new();
    private readonly PublisherKey _key = PublisherKey.Generate();
    private readonly string _bundles;

    public AgentCheckSpecification()
    {
        _bundles = Path.Combine(_machine.Root, "bundles");
        Directory.CreateDirectory(_bundles);
        var trust = TrustStore.Open(Path.Combine(_machine.Root, "trust"));
        trust.Add(_key.PublicKey);
        _machine.Put("/etc/kintsugi/agent.conf",
            $"offline-directory = {_bundles}\ntrust = {Path.Combine(_machine.Root, "trust")}\n");
    }

    public void Dispose()
    {
        _key.Dispose();
        _machine.Dispose();
    }

    private static KernelTarget Host() =>
        new(Kintsugi.Kernel.RunningKernel.Release, null, Kintsugi.Kernel.RunningKernel.BuildId
        ?? throw new InvalidOperationException("this host's kernel has no build-id"));

    private void Publish(int level)
    {
        var description = new BundleDescription
        {
            Target = Host(),
            CumulativeLevel = level,
            Fixes = [new BundleFix("CVE-2024-1086", [new CveReference(CveId.Parse("CVE-2024-1086"), CveSeverity.High,
            new DateOnly(2024, 1, 31))], "nf_tables")],
            PatchedFunctions = [new PatchedFunction("vmlinux", "nft_verdict_init")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        };
        File.WriteAllBytes(Path.Combine(_bundles, $"level{level}.bundle"),
            Bundle.Create(File.ReadAllBytes("/bin/true"), description, _key).ToArray());
    }

    [Fact]
    public async Task A_release_offered_for_this_kernel_and_not_applied_exits_11()
    {
        Publish(1);
        Publish(2);
        var result = await _machine.RunAsync("agent", "check", "--json");
        Assert.True(result.ExitCode == (int)ExitCode.OutOfDate, result.StandardError + result.StandardOutput);
        var json = JsonDocument.Parse(result.StandardOutput).RootElement;
        Assert.False(json.GetProperty("upToDate").GetBoolean());
        Assert.Equal(2, json.GetProperty("offeredLevel").GetInt32());
        Assert.Equal(JsonValueKind.Null, json.GetProperty("appliedLevel").ValueKind);
    }

    private void Metadata(long version, int current, int minimum, int[] revoked, DateTimeOffset expires,
        DateTimeOffset? made = null) =>
        File.WriteAllText(Path.Combine(_bundles, $"v{version}.metadata.json"),
            SignedReleaseMetadata.Create(
            new ReleaseMetadataDescription(Host(), version, current, minimum, revoked, expires), _key, made).Text);

    [Fact]
    public async Task A_level_the_directorys_signed_metadata_revokes_is_not_offered_and_check_keeps_nothing()
    {
        Publish(1);
        Publish(2);
        Publish(3);
        Metadata(1, current: 3, minimum: 0, revoked: [3], DateTimeOffset.UtcNow.AddDays(7));
        var result = await _machine.RunAsync("agent", "check", "--json");
        Assert.True(result.ExitCode == (int)ExitCode.OutOfDate, result.StandardError + result.StandardOutput);
        var json = JsonDocument.Parse(result.StandardOutput).RootElement;
        Assert.Equal(2, json.GetProperty("offeredLevel").GetInt32());
        Assert.Contains("level 3 is revoked", json.GetProperty("detail").GetString());
        // A check applies nothing and keeps nothing: the next real cycle judges the directory afresh.
        Assert.Empty(Directory.EnumerateFiles(Path.GetDirectoryName(_machine.Written("/var/lib/kintsugi"))!,
            "*.metadata.json", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task Expired_metadata_in_the_directory_is_reported_stale_by_check()
    {
        Publish(1);
        Metadata(1, current: 1, minimum: 0, revoked: [], DateTimeOffset.UtcNow.AddDays(-1),
            DateTimeOffset.UtcNow.AddDays(-8));
        var result = await _machine.RunAsync("agent", "check", "--json");
        Assert.True(result.ExitCode == (int)ExitCode.OutOfDate, result.StandardError + result.StandardOutput);
        Assert.Contains("is stale",
            JsonDocument.Parse(result.StandardOutput).RootElement.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task Nothing_offered_for_this_kernel_is_up_to_date()
    {
        var result = await _machine.RunAsync("agent", "check");
        Assert.True(result.ExitCode == 0, result.StandardError + result.StandardOutput);
        Assert.StartsWith("up to date: no bundle in", result.StandardOutput);
    }
}
