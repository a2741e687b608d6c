using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// Key retirement reaches installed patches: a patch whose publisher key is retired in the machine's trust store
/// is never loaded at boot and is taken out at the next check, after a good level had its chance to replace it; a
/// rotation (the same module re-signed by the new key) is adopted without a reload. The host cannot load modules,
/// so "level 3 runs" is a store record for a module the host has loaded (a built-in's /sys/module entry).
/// </summary>
public sealed class KeyRetirementSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly FakeServer _server = new();
    private readonly HttpClient _http = new();
    private readonly PublisherKey _old = PublisherKey.Generate();
    private readonly PublisherKey _new = PublisherKey.Generate();
    private readonly List<string> _log = [];

    public KeyRetirementSpecification()
    {
        var trust = TrustStore.Open(_dir["trust"]);
        trust.Add(_old.PublicKey);
        trust.Add(_new.PublicKey);
    }

    public void Dispose()
    {
        _old.Dispose();
        _new.Dispose();
        _http.Dispose();
        _server.Dispose();
        _dir.Dispose();
    }

    private MachinePaths Paths => new(_dir["state"], _dir["etc"], _dir["run"], _dir["systemd"]);

    private PatchStore Store => new(Paths, RunningKernel.Release);

    private static KernelTarget Running => new(RunningKernel.Release, null, RunningKernel.BuildId!.Value);

    private static readonly byte[] Module = File.ReadAllBytes("/bin/true");

    private void RetireOldKey() => TrustStore.Open(_dir["trust"]).Retire(_old.Id);

    private MachineAgent ServerAgent() =>
        new(new AgentConfig
        {
            Server = _server.Address,
            EnrollmentToken = "ket_token",
            TrustStore = _dir["trust"],
            Settle = TimeSpan.Zero
        }, Paths, Log, _http);

    private MachineAgent OfflineAgent() =>
        new(new AgentConfig { OfflineDirectory = _dir["offline"], TrustStore = _dir["trust"], Settle = TimeSpan.Zero },
        Paths, Log);

    private void Log(string line) { lock (_log) _log.Add(line); }

    /// <summary>Level <paramref name="level"/>, signed by <paramref name="key"/>, runs: a healthy record of a module
    /// the host has loaded.</summary>
    private string Runs(int level, PublisherKey key)
    {
        var name = Directory.GetDirectories("/sys/module").Select(Path.GetFileName)
            .First(n => n!.All(c => char.IsAsciiLetterLower(c) || c == '_'))!;
        Directory.CreateDirectory(Store.Directory);
        File.WriteAllBytes(Store.ModulePath(ModuleName.Parse(name)), Module);
        var bundle = Bundle.Create(Module, Inputs.Description(Running, level), key).ToArray();
        Store.Save(new InstalledPatch(name, Sha256Digest.Of(Module).ToString(), 1, DateTimeOffset.UtcNow,
            BootState.Healthy,
            Origin: new PatchOrigin(Sha256Digest.Of(bundle).ToString(), level, key.Id.ToString(), ["CVE-2024-1086"], [],
            null)));
        return name;
    }

    /// <summary>A server that enrolls anyone and answers every check-in with <paramref name="response"/>, serving
    /// <paramref name="bundle"/>.</summary>
    private void Serve(CheckInResponse response, byte[]? bundle = null)
    {
        _server.Handler = r => r.PathAndQuery switch
        {
            ProtocolPaths.Enroll => new(201, new EnrollResponse("m_1", "kmc_1", 3600, 30)),
            ProtocolPaths.CheckIn => new(200, response),
            var path when bundle is not null && path == ProtocolPaths.Bundle(Sha256Digest.Of(bundle)) =>
            new(200, bundle, "application/octet-stream"),
            _ => new(404),
        };
    }

    private static CheckInResponse Offer(byte[] bundle, int level)
    {
        var digest = Sha256Digest.Of(bundle);
        return new CheckInResponse(CheckInAction.Apply,
            new ReleaseOffer(level, digest, bundle.Length, ProtocolPaths.Bundle(digest)), 3600, 30, 1);
    }

    private static readonly CheckInResponse Nothing = new(CheckInAction.None, null, 3600, 30, 1);

    private bool Downloaded =>
        _server.Requests.Any(r => r.PathAndQuery.StartsWith(ProtocolPaths.BundlePrefix, StringComparison.Ordinal));

    [Fact]
    public void At_boot_an_installed_patch_signed_by_a_retired_key_is_uninstalled_and_never_loaded()
    {
        Directory.CreateDirectory(Store.Directory);
        File.WriteAllBytes(Store.ModulePath(ModuleName.Parse("kintsugi_retired")), Module);
        Store.Save(new InstalledPatch("kintsugi_retired", Sha256Digest.Of(Module).ToString(), 1, DateTimeOffset.UtcNow,
            BootState.Healthy,
            Origin: new PatchOrigin(new string('b', 64), 3, _old.Id.ToString(), ["CVE-2024-1086"], [], null)));
        RetireOldKey();

        OfflineAgentWithDirectory().Start();

        Assert.Empty(Store.List());
        Assert.False(File.Exists(Store.ModulePath(ModuleName.Parse("kintsugi_retired"))));
        Assert.Contains(_log, l =>
            l.Contains("kintsugi_retired: refused") && l.Contains($"publisher key {_old.Id}, which is retired"));
        Assert.DoesNotContain(_log, l => l.Contains("loading kintsugi_retired failed"));
    }

    private MachineAgent OfflineAgentWithDirectory()
    {
        Directory.CreateDirectory(_dir["offline"]);
        return OfflineAgent();
    }

    [Fact]
    public async Task
        At_a_check_a_running_patch_signed_by_a_retired_key_is_removed_and_reported_when_nothing_replaces_it()
    {
        Runs(3, _old);
        RetireOldKey();
        Serve(Nothing);

        var result = await ServerAgent().RunOnceAsync(default);

        Assert.True(result.Changed);
        Assert.Contains($"signed by publisher key {_old.Id}, which is retired", result.Detail);
        Assert.Empty(Store.List());
        Assert.Equal("revoked", Store.LastAttempt?.Outcome);
        Assert.Contains("which is retired",
            _server.Requests.Last(r => r.PathAndQuery == ProtocolPaths.CheckIn).Json.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task
        A_retired_keys_level_gives_way_to_a_lower_level_signed_by_a_good_key_without_counting_as_a_rollback()
    {
        Runs(3, _old);
        RetireOldKey();
        var level2 = Bundle.Create(File.ReadAllBytes("/bin/false"), Inputs.Description(Running, 2, "CVE-2024-0001"),
            _new).ToArray();
        Serve(Offer(level2, 2), level2);

        var result = await ServerAgent().RunOnceAsync(default);

        // Fetched and verified (the host then cannot load /bin/true as a module); the retired level is gone either way.
        Assert.True(Downloaded);
        Assert.DoesNotContain("rollback is refused", result.Detail);
        Assert.Contains("which is retired", result.Detail);
        Assert.DoesNotContain(Store.List(), r => r.Origin?.PublisherKeyId == _old.Id.ToString());
    }

    [Fact]
    public async Task A_rotation_the_running_module_re_signed_by_the_new_key_is_adopted_without_a_reload()
    {
        var name = Runs(3, _old);
        var resigned = Bundle.Create(Module, Inputs.Description(Running, 3), _new).ToArray();
        RetireOldKey();
        Serve(Offer(resigned, 3), resigned);

        var result = await ServerAgent().RunOnceAsync(default);

        Assert.Equal(ExitCode.Success, result.ExitCode);
        var record = Assert.Single(Store.List());
        Assert.Equal(name, record.Name);
        Assert.Equal(_new.Id.ToString(), record.Origin!.PublisherKeyId);
        Assert.Equal(Sha256Digest.Of(resigned).ToString(), record.Origin.Bundle);
        Assert.DoesNotContain("which is retired", result.Detail);
    }

    [Fact]
    public async Task Offline_a_running_patch_signed_by_a_retired_key_is_removed_while_its_bundle_is_refused()
    {
        Runs(3, _old);
        Directory.CreateDirectory(_dir["offline"]);
        File.WriteAllBytes(Path.Combine(_dir["offline"], "level3.bundle"),
            Bundle.Create(Module, Inputs.Description(Running, 3), _old).ToArray());
        RetireOldKey();

        var result = await OfflineAgent().RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("retired", result.Detail);
        Assert.Empty(Store.List());
    }

    [Fact]
    public async Task Release_metadata_kept_from_a_retired_key_is_dropped_so_the_new_key_can_speak()
    {
        var made = DateTimeOffset.UtcNow;
        // What a thief could leave behind with the old key: a huge version and a minimum no real level reaches.
        var poisoned = SignedReleaseMetadata.Create(
            new ReleaseMetadataDescription(Running, 1_000_000, 99, 99, [], made.AddDays(30)), _old);
        Serve(new CheckInResponse(CheckInAction.None, null, 3600, 30, 1, poisoned.Text));
        await ServerAgent().RunOnceAsync(default);
        Assert.Equal(1_000_000, ServerAgent().Guard().Metadata!.Metadata.Version);
        RetireOldKey();

        var fresh =
            SignedReleaseMetadata.Create(new ReleaseMetadataDescription(Running, 1, 2, 0, [], made.AddDays(7)), _new);
        Serve(new CheckInResponse(CheckInAction.None, null, 3600, 30, 1, fresh.Text));
        var result = await ServerAgent().RunOnceAsync(default);

        Assert.Contains("retired since; dropped", result.Detail);
        Assert.Equal(1, ServerAgent().Guard().Metadata!.Metadata.Version);
        Assert.Equal(_new.Id, ServerAgent().Guard().Metadata!.KeyId);
    }
    [Fact]
    public async Task
        A_signed_trust_root_update_from_the_server_retires_the_old_key_and_its_running_patch_goes_at_that_check()
    {
        using var root = PublisherKey.Generate();
        TrustStore.Open(_dir["trust"]).AddRootKey(root.PublicKey);
        Runs(3, _old);
        var update = SignedTrustRoot.Create(1, [_new.PublicKey], [_old.PublicKey], [], root);
        Serve(Nothing with { TrustRoot = update.Text });

        var result = await ServerAgent().RunOnceAsync(default);

        Assert.Equal(KeyState.Retired, TrustStore.Open(_dir["trust"]).Find(_old.Id)!.State);
        Assert.Contains($"trust root: retired key {_old.Id}", result.Detail);
        Assert.Contains("which is retired", result.Detail);
        Assert.Empty(Store.List());
    }

    [Fact]
    public async Task A_trust_root_update_not_signed_by_a_pinned_root_key_is_refused_reported_and_changes_nothing()
    {
        Runs(3, _old);
        // A server (or a stolen publisher key) trying to retire the publisher's key.
        var forged = SignedTrustRoot.Create(1, [], [_old.PublicKey], [], _new);
        Serve(Nothing with { TrustRoot = forged.Text });

        var result = await ServerAgent().RunOnceAsync(default);

        Assert.Contains("trust-root update from the server refused", result.Detail);
        Assert.Contains("trust-root update from the server refused",
            _server.Requests.Last(r => r.PathAndQuery == ProtocolPaths.CheckIn).Json.GetProperty("detail").GetString());
        Assert.Equal(KeyState.Trusted, TrustStore.Open(_dir["trust"]).Find(_old.Id)!.State);
        Assert.Single(Store.List());
    }

    [Fact]
    public async Task Offline_a_trust_root_update_in_the_directory_is_applied_before_bundles_are_verified()
    {
        using var root = PublisherKey.Generate();
        TrustStore.Open(_dir["trust"]).AddRootKey(root.PublicKey);
        Runs(3, _old);
        Directory.CreateDirectory(_dir["offline"]);
        File.WriteAllText(Path.Combine(_dir["offline"], SignedTrustRoot.FileName),
            SignedTrustRoot.Create(1, [_new.PublicKey], [_old.PublicKey], [], root).Text);

        var result = await OfflineAgent().RunOnceAsync(default);

        Assert.Contains($"trust root: retired key {_old.Id}", result.Detail);
        Assert.Empty(Store.List());
    }
}
