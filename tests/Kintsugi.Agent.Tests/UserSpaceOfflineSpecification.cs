using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.User;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// The agent's user-space side from a directory of bundles (air-gapped), on real processes of a real program: a
/// verified bundle is applied to every process mapping its object, a process started later gets it at the next pass, a
/// higher level replaces the lower one in place, and a bundle from an untrusted key changes nothing.
/// </summary>
[Collection(LoopProgram.AgentCollection)]
public sealed class UserSpaceOfflineSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly PublisherKey _key = PublisherKey.Generate();
    private readonly LoopProgram _loop;
    private readonly List<string> _log = [];

    public UserSpaceOfflineSpecification()
    {
        TrustStore.Open(_dir["trust"]).Add(_key.PublicKey);
        Directory.CreateDirectory(_dir["bundles"]);
        _loop = new LoopProgram(_dir["build"]);
    }

    public void Dispose()
    {
        _loop.Dispose();
        _key.Dispose();
        _dir.Dispose();
    }

    private MachineAgent Agent() =>
        new(new AgentConfig { OfflineDirectory = _dir["bundles"], TrustStore = _dir["trust"], Settle = TimeSpan.Zero },
            new MachinePaths(_dir["state"], _dir["etc"], _dir["run"], _dir["systemd"]), line =>
            { lock (_log) _log.Add(line); });

    private UserPatch Publish(string name, int level, PublisherKey? key = null, string? package = null)
    {
        var (patch, bytes) = _loop.Patch(name);
        var bundle = Bundle.Create(bytes, new BundleDescription
        {
            Object = new ObjectTarget(patch.Target.Object, patch.Target.BuildId, package, package is null ? null
                : "1.0-1"),
            CumulativeLevel = level,
            Fixes = [new BundleFix($"loop-fix-{level}",
            [new CveReference(CveId.Parse($"CVE-2099-4100{level}"), CveSeverity.High, new DateOnly(2099, 1, 2))],
                "compute() returns the fixed value")],
            PatchedFunctions = [new Kintsugi.Bundles.PatchedFunction(patch.Target.Object, "compute")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        }, key ?? _key);
        bundle.Save(Path.Combine(_dir["bundles"], $"{name}.bundle"));
        return patch;
    }

    [Fact]
    public async Task A_verified_user_space_bundle_is_applied_to_running_processes_and_to_one_started_later()
    {
        var first = _loop.Start();
        var patch = Publish("loop-fix", level: 1);
        var agent = Agent();

        var result = await agent.RunOnceAsync(default);

        Assert.True(result.Changed, result.Detail);
        _loop.RunsOnly(first, fixedCode: true);
        var later = _loop.Start();
        _loop.RunsOnly(later, fixedCode: false);
        var pass = Assert.Single(agent.UserPass());
        Assert.Equal((PatchState.Applied, 1, 2), (pass.State, pass.Level, pass.Patched));
        _loop.RunsOnly(later, fixedCode: true);
        Assert.Equal(patch.IdHex, Assert.Single(UserPatcher.List(later)).PatchId);
        var report = Assert.Single(agent.UserReports()!, r => r.BuildId == patch.Target.BuildId);
        Assert.Equal((PatchState.Applied, 1, 2, 2), (report.State, report.Level, report.Processes, report.Patched));
    }

    [Fact]
    public async Task
        Status_of_a_delivered_patch_names_its_object_level_bundle_and_cves_and_a_patch_applied_by_hand_has_no_level()
    {
        var delivered = _loop.Start();
        var patch = Publish("loop-fix", level: 1);
        await Agent().RunOnceAsync(default);
        var byHand = _loop.Start();
        var (other, _) = _loop.Patch("by-hand");
        Assert.Equal(ProcessOutcome.Applied, new UserPatcher().Apply(byHand, other).Outcome);

        var statuses = UserPatchStatuses.Read(Path.Combine(_dir["state"], "agent", "user"), [delivered, byHand]);

        var fromBundle = Assert.Single(statuses, s => s.PatchId == patch.IdHex);
        Assert.Equal(("loop-fix", "loop", patch.Target.BuildId, 1, 1),
            (fromBundle.Name, fromBundle.Object, fromBundle.BuildId, fromBundle.Functions, fromBundle.Level));
        Assert.Equal(["CVE-2099-41001"], fromBundle.Cves);
        Assert.Equal(Sha256Digest.Of(File.ReadAllBytes(Path.Combine(_dir["bundles"], "loop-fix.bundle"))).ToString(),
            fromBundle.Bundle);
        Assert.Equal(delivered, Assert.Single(fromBundle.Processes).Pid);
        var manual = Assert.Single(statuses, s => s.PatchId == other.IdHex);
        Assert.Equal((null, null, 0, byHand),
            (manual.Level, manual.Bundle, manual.Cves.Count, Assert.Single(manual.Processes).Pid));
    }

    [Fact]
    public async Task Openvex_and_prometheus_state_a_delivered_cve_fixed_and_exposed_while_a_process_runs_without_it()
    {
        var delivered = _loop.Start();
        Publish("loop-fix", level: 1, package: "loop-server");
        await Agent().RunOnceAsync(default);
        var agentDirectory = Path.Combine(_dir["state"], "agent", "user");

        var allPatched = UserPatchStatuses.Read(agentDirectory, [delivered]);
        var started = _loop.Start();   // not yet patched: the agent's next pass would patch it
        var oneUnpatched = UserPatchStatuses.Read(agentDirectory, [delivered, started]);

        var fixedStatement = Assert.Single(UserStatusReports.OpenVexStatements(allPatched, "host"));
        Assert.Equal(("CVE-2099-41001", "fixed", "pkg:deb/debian/loop-server@1.0-1?arch=amd64"),
            (fixedStatement.Vulnerability.Name, fixedStatement.Status, Assert.Single(fixedStatement.Products).Id));
        var exposed = Assert.Single(UserStatusReports.OpenVexStatements(oneUnpatched, "host"));
        Assert.Equal("affected", exposed.Status);
        Assert.Contains(started.ToString(), exposed.StatusNotes);
        var metrics = UserStatusReports.Prometheus(allPatched);
        Assert.Contains("kintsugi_user_patches_applied 1\n", metrics);
        Assert.Contains("kintsugi_user_cves_fixed 1\n", metrics);
        Assert.Contains(
            "kintsugi_user_cve_fixed{cve=\"CVE-2099-41001\",object=\"loop\",package=\"loop-server\"} 1\n", metrics);
        var exposedMetrics = UserStatusReports.Prometheus(oneUnpatched);
        Assert.Contains("kintsugi_user_cves_fixed 0\n", exposedMetrics);
        Assert.Contains("kintsugi_user_patch_processes_unpatched{name=\"loop-fix\",object=\"loop\"} 1\n",
            exposedMetrics);
    }

    [Fact]
    public void A_patch_applied_by_hand_states_nothing_to_scanners()
    {
        var process = _loop.Start();
        var (patch, _) = _loop.Patch("by-hand");
        Assert.Equal(ProcessOutcome.Applied, new UserPatcher().Apply(process, patch).Outcome);

        var statuses = UserPatchStatuses.Read(Path.Combine(_dir["state"], "agent", "user"), [process]);

        Assert.Empty(UserStatusReports.OpenVexStatements(statuses, "host"));
        Assert.Contains("kintsugi_user_cves_fixed 0\n", UserStatusReports.Prometheus(statuses));
    }

    [Fact]
    public async Task A_higher_level_replaces_the_lower_one_in_every_process()
    {
        var process = _loop.Start();
        Publish("loop-fix", level: 1);
        var agent = Agent();
        await agent.RunOnceAsync(default);

        var second = Publish("loop-fix-2", level: 2);
        await agent.RunOnceAsync(default);

        Assert.Equal(second.IdHex, Assert.Single(UserPatcher.List(process)).PatchId);
        _loop.RunsOnly(process, fixedCode: true);
    }

    [Fact]
    public async Task A_user_space_bundle_from_an_untrusted_key_changes_no_process()
    {
        var process = _loop.Start();
        using var stranger = PublisherKey.Generate();
        Publish("loop-fix", level: 1, stranger);

        var result = await Agent().RunOnceAsync(default);

        Assert.Contains("not in trust store", result.Detail);
        Assert.Empty(UserPatcher.List(process));
        _loop.RunsOnly(process, fixedCode: false);
    }
}
