using Kintsugi.Bundles;
using Kintsugi.Kernel;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// Offline directories carry signed release metadata (<c>*.metadata.json</c>, <c>*.timestamp.json</c>) and the agent
/// obeys it as it does a server's: no revoked level, no rollback without it, removal only under it, stale reported.
/// The host cannot load modules, so "level 3 runs" is a store record for a module the host has loaded.
/// </summary>
public sealed class OfflineMetadataSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly PublisherKey _key = PublisherKey.Generate();
    private readonly List<string> _log = [];

    public OfflineMetadataSpecification()
    {
        TrustStore.Open(_dir["trust"]).Add(_key.PublicKey);
        Directory.CreateDirectory(_dir["offline"]);
    }

    public void Dispose()
    {
        _key.Dispose();
        _dir.Dispose();
    }

    private MachinePaths Paths => new(_dir["state"], _dir["etc"], _dir["run"], _dir["systemd"]);

    private PatchStore Store => new(Paths, RunningKernel.Release);

    private static KernelTarget Running => new(RunningKernel.Release, null, RunningKernel.BuildId!.Value);

    private MachineAgent Agent() =>
        new(new AgentConfig { OfflineDirectory = _dir["offline"], TrustStore = _dir["trust"], Settle = TimeSpan.Zero },
        Paths, line => { lock (_log) _log.Add(line); });

    private void Put(int level, string module = "/bin/true") =>
        File.WriteAllBytes(Path.Combine(_dir["offline"], $"level{level}.bundle"),
        Bundle.Create(File.ReadAllBytes(module), Inputs.Description(Running, level), _key).ToArray());

    private void PutMetadata(long version, int current, int minimum, int[] revoked, DateTimeOffset? expires = null,
        DateTimeOffset? made = null) =>
        File.WriteAllText(Path.Combine(_dir["offline"], $"v{version}.metadata.json"),
            SignedReleaseMetadata.Create(new ReleaseMetadataDescription(Running, version, current, minimum, revoked,
            expires ?? DateTimeOffset.UtcNow.AddDays(7)), _key, made).Text);

    private void Runs(int level)
    {
        var name = Directory.GetDirectories("/sys/module").Select(Path.GetFileName)
            .First(n => n!.All(c => char.IsAsciiLetterLower(c) || c == '_'))!;
        Directory.CreateDirectory(Store.Directory);
        File.WriteAllBytes(Store.ModulePath(ModuleName.Parse(name)), [0x7f]);
        Store.Save(new InstalledPatch(name, new string('a', 64), 1, DateTimeOffset.UtcNow, BootState.Healthy,
            Origin: new PatchOrigin(new string('b', 64), level, _key.Id.ToString(), ["CVE-2024-1086"], [], null)));
    }

    [Fact]
    public async Task A_level_the_directorys_metadata_revokes_is_refused_and_the_best_allowed_level_is_taken_instead()
    {
        Put(3);
        Put(4, "/bin/false");
        PutMetadata(1, 4, 0, [4]);

        var result = await Agent().RunOnceAsync(default);

        lock (_log) Assert.Contains(_log, l =>
            l.Contains("level4.bundle") && l.Contains("level 4 is revoked by signed release metadata version 1"));
        Assert.Contains("level 3", result.Detail); // taken (this host then cannot load /bin/true as a module)
        Assert.Equal(1, Agent().Guard().Metadata!.Metadata.Version);
    }

    [Fact]
    public async Task Without_signed_metadata_a_lower_level_in_the_directory_is_a_rollback_and_refused()
    {
        Runs(3);
        Put(2);

        var result = await Agent().RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("rollback is refused", result.Detail);
        Assert.Equal(3, Assert.Single(Store.List()).Origin!.Level);
    }

    [Fact]
    public async Task Signed_metadata_that_revokes_the_running_level_removes_it_when_no_allowed_level_remains()
    {
        Runs(3);
        PutMetadata(1, 3, 0, [1, 2, 3]);

        var result = await Agent().RunOnceAsync(default);

        Assert.True(result.Changed);
        Assert.Contains("level 3 is forbidden", result.Detail);
        Assert.Empty(Store.List());
        Assert.Equal("revoked", Store.LastAttempt?.Outcome);
    }

    [Fact]
    public async Task Expired_metadata_in_the_directory_is_reported_stale()
    {
        var made = DateTimeOffset.UtcNow.AddDays(-10);
        PutMetadata(1, 2, 0, [], expires: made.AddDays(7), made: made);

        var result = await Agent().RunOnceAsync(default);

        Assert.Contains("is stale", result.Detail);
    }
}
