using System.Net;
using System.Text.Json;
using Kintsugi.Agent;
using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;
using Kintsugi.Testing;
using Kintsugi.User;

namespace Kintsugi.Server.Tests;

/// <summary>
/// User-space patches delivered end to end on this host: a user-space bundle (a real patch for a real program built
/// with gcc) published on the real server, the real agent applying it to every running process that maps the program, a
/// process started later patched by the agent's next pass, the reports counting the CVE, and a revoke reverting it
/// only once the publisher's signed release metadata for the object says so.
/// </summary>
public sealed class UserSpaceDeliverySpecification : IDisposable
{
    private const string Cve = "CVE-2099-41001";
    private readonly TemporaryDirectory _dir = new();
    private readonly List<string> _log = [];
    private readonly LoopProgram _loop;

    public UserSpaceDeliverySpecification() => _loop = new LoopProgram(_dir.Path);

    public void Dispose()
    {
        _loop.Dispose();
        _dir.Dispose();
    }

    private string PathOf(string name) => _dir[name];

    private MachinePaths Paths => new(PathOf("state"), PathOf("etc"), PathOf("run"), PathOf("systemd"));

    private MachineAgent Agent(TestServer server, string token) =>
        new(new AgentConfig
        {
            Server = server.BaseAddress,
            EnrollmentToken = token,
            ServerCertificate = Path.Combine(server.Options.DataDirectory, "tls", "server.crt"),
            TrustStore = PathOf("trust"),
            Settle = TimeSpan.Zero,
        }, Paths, line => { lock (_log) _log.Add(line); });

    private static byte[] UserBundle(PublisherKey key, UserPatch patch, byte[] patchBytes, int level) =>
        Bundle.Create(patchBytes, new BundleDescription
        {
            Object = new ObjectTarget(patch.Target.Object, patch.Target.BuildId, "loop-tools", "1.0-1"),
            CumulativeLevel = level,
            Fixes = [new BundleFix("loop-compute", [new CveReference(CveId.Parse(Cve), CveSeverity.High,
            new DateOnly(2099, 1, 2))], "compute() returns the fixed value")],
            PatchedFunctions = [new Kintsugi.Bundles.PatchedFunction(patch.Target.Object, "compute")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        }, key).ToArray();

    private static JsonElement CveRow(JsonElement exposure) =>
        exposure.GetProperty("cves").EnumerateArray().Single(c => c.GetProperty("cve").GetString() == Cve);

    [Fact]
    public async Task
        A_published_user_space_patch_reaches_each_process_mapping_its_object_and_only_a_signed_revoke_takes_it_out()
    {
        var (patch, patchBytes) = _loop.Patch("loop-compute-fix");
        await using var server = await TestServer.StartAsync();
        using var stranger = PublisherKey.Generate();
        TrustStore.Open(PathOf("trust")).Add(stranger.PublicKey);
        var token = await server.EnrollmentTokenAsync();
        var first = _loop.Start();
        var agent = Agent(server, token);
        var release = await server.PublishAsync(UserBundle(server.Publisher, patch, patchBytes, level: 1));

        // The machine does not trust the publisher yet: it refuses the bundle, and the server counts it exposed.
        await agent.RunOnceAsync(default);
        _loop.RunsOnly(first, fixedCode: false);
        var exposed = Assert.Single(CveRow(await server.GetJsonAsync("/api/v1/reports/exposure"))
            .GetProperty("machines").EnumerateArray());
        Assert.Equal(("loop", patch.Target.BuildId.ToString()),
            (exposed.GetProperty("object").GetString(), exposed.GetProperty("buildId").GetString()));
        lock (_log) Assert.Contains(_log, l => l.Contains("refused") && l.Contains("not in trust store"));

        TrustStore.Open(PathOf("trust")).Add(server.Publisher.PublicKey);
        await agent.RunOnceAsync(default);

        _loop.RunsOnly(first, fixedCode: true);
        var row = CveRow(await server.GetJsonAsync("/api/v1/reports/exposure"));
        Assert.Equal((0, 1), (row.GetProperty("exposed").GetInt32(), row.GetProperty("fixed").GetInt32()));
        var compliance = Assert.Single((await server.GetJsonAsync("/api/v1/reports/compliance")).GetProperty("items")
            .EnumerateArray(),
            r => r.GetProperty("cve").GetString() == Cve);
        Assert.Equal(("compliant", "loop", patch.Target.BuildId.ToString()),
            (compliance.GetProperty("status").GetString(), compliance.GetProperty("object").GetString(),
            compliance.GetProperty("buildId").GetString()));

        // A process started after the check: the agent's next user-space pass (every user-scan-interval) patches it.
        var later = _loop.Start();
        _loop.RunsOnly(later, fixedCode: false);
        var pass = Assert.Single(agent.UserPass());
        Assert.Equal((PatchState.Applied, 2), (pass.State, pass.Patched));
        _loop.RunsOnly(later, fixedCode: true);

        // A revoke by the server alone (an operator token, or whoever holds the server) cannot strip the patch.
        Assert.Equal(HttpStatusCode.OK, (
            await server.PostJsonAsync($"/api/v1/releases/{release}/revoke", new RevokeRequest("bad fix"))).StatusCode);
        var bare = await agent.RunOnceAsync(default);
        Assert.Contains("no signed release metadata for object loop revokes the running level 1", bare.Detail);
        _loop.RunsOnly(first, fixedCode: true);

        // The publisher's signed metadata for the object, published on the server, travels with the offer: obeyed.
        var metadata = SignedReleaseMetadata.Create(new ReleaseMetadataDescription(null, 1, 1, 0, [1],
            DateTimeOffset.UtcNow.AddDays(7), new ObjectTarget("loop", patch.Target.BuildId)), server.Publisher);
        Assert.Equal(HttpStatusCode.Created,
            (await server.PostJsonAsync("/api/v1/metadata", new { metadata = metadata.Text })).StatusCode);
        await agent.RunOnceAsync(default);

        _loop.RunsOnly(first, fixedCode: false);
        _loop.RunsOnly(later, fixedCode: false);
        Assert.Empty(UserPatcher.List(first));
        // No good release fixes the CVE for this build any more: the machine is no longer judged on it, and it shows
        // the revert.
        row = CveRow(await server.GetJsonAsync("/api/v1/reports/exposure"));
        Assert.Equal((0, 0), (row.GetProperty("exposed").GetInt32(), row.GetProperty("fixed").GetInt32()));
        var machineId = Assert.Single((await server.GetJsonAsync("/api/v1/machines")).EnumerateArray())
            .GetProperty("id").GetString();
        var loop = Assert.Single((await server.GetJsonAsync($"/api/v1/machines/{machineId}")).GetProperty("userObjects")
            .EnumerateArray());
        Assert.Equal(("loop", "revoked", 2), (loop.GetProperty("object").GetString(),
            loop.GetProperty("state").GetString(), loop.GetProperty("processes").GetInt32()));
        var audit = (await server.GetJsonAsync("/api/v1/audit")).EnumerateArray()
            .Select(e => e.GetProperty("action").GetString()).ToList();
        Assert.Contains("machine.user-state", audit);
    }
}
