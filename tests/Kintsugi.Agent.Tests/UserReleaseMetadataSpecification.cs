using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;
using Kintsugi.User;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// Signed release metadata rules user-space patches as it rules kernel ones (docs/bundle-format.md, "Release
/// metadata"), on real processes of a real program: from a directory and from a hostile server, a level the
/// publisher's metadata for the object revokes is never applied and is taken out of running processes, and only
/// that metadata can make the agent go down a level or obey a server's <c>remove</c>.
/// </summary>
[Collection(LoopProgram.AgentCollection)]
public sealed class UserReleaseMetadataSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly PublisherKey _key = PublisherKey.Generate();
    private readonly FakeServer _server = new();
    private readonly HttpClient _http = new();
    private readonly LoopProgram _loop;
    private readonly List<string> _log = [];

    public UserReleaseMetadataSpecification()
    {
        TrustStore.Open(_dir["trust"]).Add(_key.PublicKey);
        Directory.CreateDirectory(_dir["bundles"]);
        _loop = new LoopProgram(_dir["build"]);
    }

    public void Dispose()
    {
        _loop.Dispose();
        _http.Dispose();
        _server.Dispose();
        _key.Dispose();
        _dir.Dispose();
    }

    private MachinePaths Paths => new(_dir["state"], _dir["etc"], _dir["run"], _dir["systemd"]);

    private MachineAgent OfflineAgent() =>
        new(new AgentConfig { OfflineDirectory = _dir["bundles"], TrustStore = _dir["trust"], Settle = TimeSpan.Zero },
            Paths, line => { lock (_log) _log.Add(line); });

    private MachineAgent ServerAgent() =>
        new(new AgentConfig
        {
            Server = _server.Address,
            EnrollmentToken = "ket_token",
            TrustStore = _dir["trust"],
            Settle = TimeSpan.Zero
        }, Paths, line => { lock (_log) _log.Add(line); }, _http);

    /// <summary>A signed bundle of the loop program's fix at <paramref name="level"/>, saved in the offline
    /// directory.</summary>
    private (UserPatch Patch, byte[] Bundle) Publish(int level)
    {
        var (patch, bytes) = _loop.Patch($"loop-fix-{level}");
        var bundle = Bundle.Create(bytes, new BundleDescription
        {
            Object = new ObjectTarget(patch.Target.Object, patch.Target.BuildId),
            CumulativeLevel = level,
            Fixes = [new BundleFix($"loop-fix-{level}",
            [new CveReference(CveId.Parse($"CVE-2099-4200{level}"), CveSeverity.High, new DateOnly(2099, 1, 2))],
                "compute() returns the fixed value")],
            PatchedFunctions = [new Kintsugi.Bundles.PatchedFunction(patch.Target.Object, "compute")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        }, _key);
        bundle.Save(Path.Combine(_dir["bundles"], $"loop-fix-{level}.bundle"));
        return (patch, bundle.ToArray());
    }

    private SignedReleaseMetadata Metadata(UserPatch patch, long version, int current, int[] revoked) =>
        SignedReleaseMetadata.Create(new ReleaseMetadataDescription(null, version, current, 0, revoked,
            DateTimeOffset.UtcNow.AddDays(7), new ObjectTarget(patch.Target.Object, patch.Target.BuildId)), _key);

    /// <summary>A server that enrolls anyone, answers every check-in with <paramref name="offer"/> for the loop
    /// program, and serves every bundle published so far.</summary>
    private void Serve(Func<UserOffer> offer, params byte[][] bundles)
    {
        _server.Handler = r =>
        {
            if (r.PathAndQuery == ProtocolPaths.Enroll) return new(201, new EnrollResponse("m_1", "kmc_1", 3600, 30));
            if (r.PathAndQuery == ProtocolPaths.CheckIn)
                return new(200, new CheckInResponse(CheckInAction.None, null, 3600, 30, 1, User: [offer()]));
            return bundles.FirstOrDefault(b => r.PathAndQuery == ProtocolPaths.Bundle(Sha256Digest.Of(b))) is { } found
                ? new(200, found, "application/octet-stream") : new(404);
        };
    }

    private static UserOffer Apply(UserPatch patch, byte[] bundle, int level, SignedReleaseMetadata? metadata = null)
    {
        var digest = Sha256Digest.Of(bundle);
        return new UserOffer(patch.Target.BuildId, CheckInAction.Apply,
            new ReleaseOffer(level, digest, bundle.Length, ProtocolPaths.Bundle(digest)), metadata?.Text);
    }

    private bool Downloaded(byte[] bundle) =>
        _server.Requests.Any(r => r.PathAndQuery == ProtocolPaths.Bundle(Sha256Digest.Of(bundle)));

    [Fact]
    public async Task An_installed_level_that_signed_metadata_revokes_is_reverted_in_every_running_process()
    {
        var process = _loop.Start();
        var (patch, _) = Publish(1);
        var agent = OfflineAgent();
        await agent.RunOnceAsync(default);
        _loop.RunsOnly(process, fixedCode: true);

        File.WriteAllText(Path.Combine(_dir["bundles"], "loop.metadata.json"), Metadata(patch, 1, 1, [1]).Text);
        var result = await agent.RunOnceAsync(default);

        Assert.Contains("level 1 is revoked by signed release metadata version 1", result.Detail);
        Assert.Empty(UserPatcher.List(process));
        _loop.RunsOnly(process, fixedCode: false);
        Assert.Empty(agent.UserPass());
    }

    [Fact]
    public async Task A_bundle_at_a_revoked_level_is_not_applied_and_the_highest_permitted_level_is()
    {
        var process = _loop.Start();
        var (first, _) = Publish(1);
        Publish(2);
        File.WriteAllText(Path.Combine(_dir["bundles"], "loop.metadata.json"), Metadata(first, 1, 2, [2]).Text);

        var result = await OfflineAgent().RunOnceAsync(default);

        Assert.Contains("level 2 is revoked by signed release metadata version 1", result.Detail);
        Assert.Equal(first.IdHex, Assert.Single(UserPatcher.List(process)).PatchId);
        _loop.RunsOnly(process, fixedCode: true);
    }

    [Fact]
    public async Task A_server_offering_a_lower_level_is_refused_until_signed_metadata_revokes_the_running_one()
    {
        var process = _loop.Start();
        var (one, bundleOne) = Publish(1);
        var (two, bundleTwo) = Publish(2);
        var agent = ServerAgent();
        Serve(() => Apply(two, bundleTwo, 2), bundleOne, bundleTwo);
        await agent.RunOnceAsync(default);
        Assert.Equal(two.IdHex, Assert.Single(UserPatcher.List(process)).PatchId);

        Serve(() => Apply(one, bundleOne, 1), bundleOne, bundleTwo);
        var rollback = await agent.RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, rollback.ExitCode);
        Assert.Contains("level 1 is below the running level 2", rollback.Detail);
        Assert.False(Downloaded(bundleOne));
        Assert.Equal(two.IdHex, Assert.Single(UserPatcher.List(process)).PatchId);

        Serve(() => Apply(one, bundleOne, 1, Metadata(one, 1, 2, [2])), bundleOne, bundleTwo);
        var revoked = await agent.RunOnceAsync(default);

        Assert.Equal(ExitCode.Success, revoked.ExitCode);
        Assert.Equal(one.IdHex, Assert.Single(UserPatcher.List(process)).PatchId);
        _loop.RunsOnly(process, fixedCode: true);
    }

    [Fact]
    public async Task A_bare_remove_from_the_server_is_refused_and_one_backed_by_signed_metadata_is_obeyed()
    {
        var process = _loop.Start();
        var (patch, bundle) = Publish(1);
        var agent = ServerAgent();
        Serve(() => Apply(patch, bundle, 1), bundle);
        await agent.RunOnceAsync(default);

        Serve(() => new UserOffer(patch.Target.BuildId, CheckInAction.Remove, null), bundle);
        var bare = await agent.RunOnceAsync(default);

        Assert.Equal(ExitCode.InputRefused, bare.ExitCode);
        Assert.Contains("no signed release metadata for object loop", bare.Detail);
        Assert.Equal(patch.IdHex, Assert.Single(UserPatcher.List(process)).PatchId);
        _loop.RunsOnly(process, fixedCode: true);

        Serve(() => new UserOffer(patch.Target.BuildId, CheckInAction.Remove, null, Metadata(patch, 1, 1, [1]).Text),
            bundle);
        var signed = await agent.RunOnceAsync(default);

        Assert.Equal(ExitCode.Success, signed.ExitCode);
        Assert.Empty(UserPatcher.List(process));
        _loop.RunsOnly(process, fixedCode: false);
    }
}
