using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// A hostile server against the agent's release-metadata guard, over a real HTTP listener on this host: the
/// server may offer any validly signed bundle and say <c>remove</c>, but only signed release metadata can
/// roll a machine back or strip its patches, and old or expired metadata is refused or reported. The host
/// cannot load modules, so "level 3 runs" is a store record for a module the host has loaded (a built-in's
/// /sys/module entry), which is all the agent's decision reads.
/// </summary>
public sealed class ReleaseMetadataSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly FakeServer _server = new();
    private readonly HttpClient _http = new();
    private readonly PublisherKey _key = PublisherKey.Generate();
    private readonly PublisherKey _timestampKey = PublisherKey.Generate();
    private readonly List<string> _log = [];

    public ReleaseMetadataSpecification()
    {
        var trust = TrustStore.Open(_dir["trust"]);
        trust.Add(_key.PublicKey);
        trust.AddTimestampKey(_timestampKey.PublicKey);
    }

    public void Dispose()
    {
        _key.Dispose();
        _timestampKey.Dispose();
        _http.Dispose();
        _server.Dispose();
        _dir.Dispose();
    }

    private MachinePaths Paths => new(_dir["state"], _dir["etc"], _dir["run"], _dir["systemd"]);

    private PatchStore Store => new(Paths, RunningKernel.Release);

    private MachineAgent Agent(ClientLimits? limits = null) =>
        new(new AgentConfig
        {
            Server = _server.Address,
            EnrollmentToken = "ket_token",
            TrustStore = _dir["trust"],
            Settle = TimeSpan.Zero
        }, Paths, line => { lock (_log) _log.Add(line); }, _http, limits);

    private static KernelTarget Running => new(RunningKernel.Release, null, RunningKernel.BuildId!.Value);

    private SignedReleaseMetadata Metadata(long version, int current, int minimum, int[] revoked,
        DateTimeOffset? expires = null, DateTimeOffset? made = null, PublisherKey? key = null) =>
        SignedReleaseMetadata.Create(new ReleaseMetadataDescription(Running, version, current, minimum, revoked,
        expires ?? DateTimeOffset.UtcNow.AddDays(7)), key ?? _key, made);

    private byte[] Bundle(int level) => Kintsugi.Bundles.Bundle.Create(File.ReadAllBytes("/bin/true"),
        Inputs.Description(Running, level), _key).ToArray();

    /// <summary>A server that enrolls anyone and answers every check-in with <paramref name="response"/>, serving
    /// <paramref name="bundle"/>.</summary>
    private void Serve(Func<CheckInResponse> response, byte[]? bundle = null)
    {
        _server.Handler = r => r.PathAndQuery switch
        {
            ProtocolPaths.Enroll => new(201, new EnrollResponse("m_1", "kmc_1", 3600, 30)),
            ProtocolPaths.CheckIn => new(200, response()),
            var path when bundle is not null && path == ProtocolPaths.Bundle(Sha256Digest.Of(bundle)) =>
            new(200, bundle, "application/octet-stream"),
            _ => new(404),
        };
    }

    private static CheckInResponse Offer(byte[] bundle, int level, SignedReleaseMetadata? metadata = null,
        SignedReleaseTimestamp? timestamp = null)
    {
        var digest = Sha256Digest.Of(bundle);
        return new CheckInResponse(CheckInAction.Apply, new ReleaseOffer(level, digest, bundle.Length,
            ProtocolPaths.Bundle(digest)), 3600, 30, 1, metadata?.Text, timestamp?.Text);
    }

    private static CheckInResponse Remove(SignedReleaseMetadata? metadata = null) =>
        new(CheckInAction.Remove, null, 3600, 30, 1, metadata?.Text);

    private static CheckInResponse
        Nothing(SignedReleaseMetadata? metadata = null, SignedReleaseTimestamp? timestamp = null) =>
        new(CheckInAction.None, null, 3600, 30, 1, metadata?.Text, timestamp?.Text);

    /// <summary>Records level <paramref name="level"/> as running: a healthy record of a module the host kernel has
    /// loaded.</summary>
    private void Runs(int level)
    {
        var name = Directory.GetDirectories("/sys/module").Select(Path.GetFileName)
            .First(n => n!.All(c => char.IsAsciiLetterLower(c) || c == '_'))!;
        Directory.CreateDirectory(Store.Directory);
        File.WriteAllBytes(Store.ModulePath(ModuleName.Parse(name)), [0x7f]);
        Store.Save(new InstalledPatch(name, new string('a', 64), 1, DateTimeOffset.UtcNow, BootState.Healthy,
            Origin: new PatchOrigin(new string('b', 64), level, _key.Id.ToString(), ["CVE-2024-1086"], [], null)));
    }

    private bool Downloaded =>
        _server.Requests.Any(r => r.PathAndQuery.StartsWith(ProtocolPaths.BundlePrefix, StringComparison.Ordinal));

    private ReceivedRequest LastCheckIn => _server.Requests.Last(r => r.PathAndQuery == ProtocolPaths.CheckIn);

    [Fact]
    public async Task A_rollback_to_a_lower_level_is_refused_while_no_signed_metadata_revokes_the_running_level()
    {
        Runs(3);
        var level2 = Bundle(2);
        Serve(() => Offer(level2, 2), level2);

        var result = await Agent().RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("below the running level 3", result.Detail);
        Assert.False(Downloaded);
        Assert.Contains("rollback is refused", LastCheckIn.Json.GetProperty("detail").GetString());
        Assert.Equal(3, Assert.Single(Store.List()).Origin!.Level);
    }

    [Fact]
    public async Task A_rollback_is_taken_when_signed_metadata_revokes_the_running_level()
    {
        Runs(3);
        var level2 = Bundle(2);
        Serve(() => Offer(level2, 2, Metadata(1, 3, 0, [3])), level2);

        var result = await Agent().RunOnceAsync(default);

        // Allowed: the bundle is fetched and verified; this host then cannot load /bin/true as a module.
        Assert.True(Downloaded);
        Assert.DoesNotContain("rollback is refused", result.Detail);
    }

    [Fact]
    public async Task A_level_below_the_signed_minimum_is_refused_before_download()
    {
        var level2 = Bundle(2);
        Serve(() => Offer(level2, 2, Metadata(1, 4, 3, [])), level2);

        var result = await Agent().RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("below the minimum level 3", result.Detail);
        Assert.False(Downloaded);
        Assert.Equal("apply-failed", Store.LastAttempt?.Outcome);
        Assert.Contains("below the minimum level 3", LastCheckIn.Json.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task A_revoked_level_is_refused_even_when_the_server_offers_it()
    {
        var level4 = Bundle(4);
        Serve(() => Offer(level4, 4, Metadata(1, 4, 0, [4])), level4);

        var result = await Agent().RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("level 4 is revoked by signed release metadata version 1", result.Detail);
        Assert.False(Downloaded);
    }

    [Fact]
    public async Task A_bundle_whose_signed_level_is_revoked_is_refused_whatever_level_the_server_claims_for_it()
    {
        var level4 = Bundle(4);
        Serve(() => Offer(level4, 2, Metadata(1, 4, 0, [4])), level4);

        var result = await Agent().RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("nothing loaded: level 4 is revoked", result.Detail);
    }

    [Fact]
    public async Task A_bare_remove_from_the_server_is_refused_reported_and_the_patch_stays()
    {
        Runs(3);
        Serve(() => Remove());

        var result = await Agent().RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("asked to remove every patch", result.Detail);
        Assert.Contains("refused, level 3 keeps running", LastCheckIn.Json.GetProperty("detail").GetString());
        Assert.Equal(3, Assert.Single(Store.List()).Origin!.Level);
        Assert.NotEqual("revoked", Store.LastAttempt?.Outcome);
    }

    [Fact]
    public async Task A_remove_is_obeyed_when_signed_metadata_revokes_the_running_level()
    {
        Runs(3);
        Serve(() => Remove(Metadata(1, 3, 0, [1, 2, 3])));

        var result = await Agent().RunOnceAsync(default);

        Assert.Equal(ExitCode.Success, result.ExitCode);
        Assert.Empty(Store.List());
        Assert.Equal("revoked", Store.LastAttempt?.Outcome);
    }

    [Fact]
    public async Task A_download_that_stalls_is_reported_to_the_server_and_the_running_level_stays()
    {
        Runs(3);
        var level4 = Bundle(4);
        var digest = Sha256Digest.Of(level4);
        _server.Handler = r => r.PathAndQuery switch
        {
            ProtocolPaths.Enroll => new(201, new EnrollResponse("m_1", "kmc_1", 3600, 30)),
            ProtocolPaths.CheckIn => new(200, Offer(level4, 4)),
            var path when path == ProtocolPaths.Bundle(digest) =>
            new(200, level4, "application/octet-stream", StallAfter: 1000),
            _ => new(404),
        };

        var error = await Assert.ThrowsAsync<ServerUnavailableException>(() =>
            Agent(new ClientLimits { IdleTimeout = TimeSpan.FromSeconds(2) }).RunOnceAsync(default));

        Assert.Contains("level 3 keeps running", error.Message);
        var reported = LastCheckIn.Json;
        Assert.Contains("download of level 4", reported.GetProperty("detail").GetString());
        Assert.Contains("sent nothing for 2 s after 1000 bytes", reported.GetProperty("detail").GetString());
        Assert.Equal(3, Assert.Single(Store.List()).Origin!.Level);
    }

    [Fact]
    public async Task Expired_metadata_is_reported_stale_to_the_server_and_in_the_result()
    {
        var made = DateTimeOffset.UtcNow.AddDays(-10);
        Serve(() => Nothing(Metadata(1, 2, 0, [], expires: made.AddDays(7), made: made)));

        var result = await Agent().RunOnceAsync(default);

        Assert.Contains("is stale", result.Detail);
        var report = LastCheckIn.Json.GetProperty("metadata");
        Assert.Equal("stale", report.GetProperty("freshness").GetString());
        Assert.Equal(1, report.GetProperty("version").GetInt64());
        Assert.Contains("stale", LastCheckIn.Json.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task A_timestamp_key_keeps_expired_metadata_fresh_but_a_publisher_key_cannot_sign_timestamps()
    {
        var made = DateTimeOffset.UtcNow.AddDays(-10);
        var metadata = Metadata(1, 2, 0, [], expires: made.AddDays(7), made: made);
        Serve(() => Nothing(metadata, SignedReleaseTimestamp.Create(metadata, DateTimeOffset.UtcNow.AddDays(1), _key)));
        var refused = await Agent().RunOnceAsync(default);
        Assert.Contains("release timestamp refused", refused.Detail);
        Assert.Equal(MetadataFreshness.Stale, Agent().Guard().Freshness);

        Serve(() => Nothing(metadata,
            SignedReleaseTimestamp.Create(metadata, DateTimeOffset.UtcNow.AddDays(1), _timestampKey)));
        var extended = await Agent().RunOnceAsync(default);
        Assert.DoesNotContain("stale", extended.Detail);
        Assert.Equal(MetadataFreshness.Fresh, Agent().Guard().Freshness);
        Assert.Equal("fresh", LastCheckIn.Json.GetProperty("metadata").GetProperty("freshness").GetString());
    }

    [Fact]
    public async Task Older_metadata_is_refused_and_the_newest_seen_still_rules()
    {
        var level2 = Bundle(2);
        Serve(() => Nothing(Metadata(2, 4, 3, [])));
        await Agent().RunOnceAsync(default);
        // A server that replays version 1 (no minimum) to get level 2 accepted again.
        Serve(() => Offer(level2, 2, Metadata(1, 4, 0, [])), level2);

        var result = await Agent().RunOnceAsync(default);

        Assert.Contains("older than version 2 kept here", result.Detail);
        Assert.Contains("below the minimum level 3", result.Detail);
        Assert.False(Downloaded);
        Assert.Equal(2, Agent().Guard().Metadata!.Metadata.Version);
    }

    [Fact]
    public async Task Metadata_signed_by_an_untrusted_key_is_refused_and_changes_nothing()
    {
        using var stranger = PublisherKey.Generate();
        Runs(3);
        Serve(() => Remove(Metadata(5, 3, 0, [3], key: stranger)));

        var result = await Agent().RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("release metadata refused", result.Detail);
        Assert.Null(Agent().Guard().Metadata);
        Assert.Single(Store.List());
    }
}
