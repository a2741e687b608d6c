using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// The agent's server mode end to end against a real HTTP listener, on this host: enrollment, check-in,
/// download and verification, refusal, reporting. The host cannot load modules, so every bundle here is
/// one the agent must refuse before anything reaches a kernel; applying is proven in the lab.
/// </summary>
public sealed class ServerModeSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly FakeServer _server = new();
    private readonly HttpClient _http = new();
    private readonly PublisherKey _key = PublisherKey.Generate();
    private readonly List<string> _log = [];

    public ServerModeSpecification() => TrustStore.Open(_dir["trust"]).Add(_key.PublicKey);

    public void Dispose()
    {
        _key.Dispose();
        _http.Dispose();
        _server.Dispose();
        _dir.Dispose();
    }

    private MachinePaths Paths => new(_dir["state"], _dir["etc"], _dir["run"], _dir["systemd"]);

    private MachineAgent Agent(string? token = "ket_token") =>
        new(new AgentConfig
        {
            Server = _server.Address,
            EnrollmentToken = token,
            TrustStore = _dir["trust"],
            Settle = TimeSpan.Zero
        }, Paths, line => { lock (_log) _log.Add(line); }, _http);

    private static KernelTarget Running => new(RunningKernel.Release, null, RunningKernel.BuildId!.Value);

    /// <summary>A server that enrolls anyone with ket_token and offers <paramref name="bundle"/> at check-in.</summary>
    private void Serve(byte[]? bundle, int level = 2, string credential = "kmc_1")
    {
        var digest = bundle is null ? default : Sha256Digest.Of(bundle);
        _server.Handler = r => r.PathAndQuery switch
        {
            ProtocolPaths.Enroll => r.Json.GetProperty("token").GetString() == "ket_token"
                ? new(201, new EnrollResponse("m_1", credential, 3600, 30))
                : new(401, FakeServer.Problem(401, "unknown token")),
            _ when r.Authorization != "Bearer " + credential => new(401, FakeServer.Problem(401, "credential unknown")),
            ProtocolPaths.CheckIn => new(200, bundle is null
                ? new CheckInResponse(CheckInAction.None, null, 3600, 30, 1)
                : new CheckInResponse(CheckInAction.Apply,
                new ReleaseOffer(level, digest, bundle.Length, ProtocolPaths.Bundle(digest)), 3600, 30, 1)),
            var path when bundle is not null && path == ProtocolPaths.Bundle(digest) =>
            new(200, bundle, "application/octet-stream"),
            _ => new(404),
        };
    }

    private IEnumerable<ReceivedRequest> CheckIns =>
        _server.Requests.Where(r => r.PathAndQuery == ProtocolPaths.CheckIn);

    [Fact]
    public async Task The_agent_enrolls_once_keeps_its_credential_private_and_checks_in_with_its_kernel()
    {
        Serve(null);
        var agent = Agent();
        agent.Start();
        await agent.RunOnceAsync(default);
        await Agent().RunOnceAsync(default);
        Assert.Single(_server.Requests, r => r.PathAndQuery == ProtocolPaths.Enroll);
        var credential = Path.Combine(agent.StateDirectory, "credential");
        Assert.Equal("kmc_1", File.ReadAllText(credential).Trim());
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(credential));
        var checkIn = CheckIns.Last();
        Assert.Equal("Bearer kmc_1", checkIn.Authorization);
        Assert.Equal(RunningKernel.BuildId!.Value.ToString(),
            checkIn.Json.GetProperty("kernel").GetProperty("buildId").GetString());
        Assert.Equal(MachineStatus.Read(Paths).State, checkIn.Json.GetProperty("state").GetString());
    }

    [Theory]
    [InlineData("web-17.example.com", "web-17.example.com")]
    [InlineData("(none)", "unnamed")]
    [InlineData("", "unnamed")]
    [InlineData("büro pc", "b-ro-pc")]
    public void The_hostname_is_reported_in_the_form_the_protocol_takes(string name, string reported) =>
        Assert.Equal(reported, MachineAgent.ReportedHostname(name));

    [Fact]
    public async Task A_revoked_credential_is_replaced_by_enrolling_again_with_the_configured_token()
    {
        Serve(null, credential: "kmc_1");
        await Agent().RunOnceAsync(default);
        Serve(null, credential: "kmc_2");
        await Agent().RunOnceAsync(default);
        Assert.Equal(2, _server.Requests.Count(r => r.PathAndQuery == ProtocolPaths.Enroll));
        Assert.Equal("Bearer kmc_2", CheckIns.Last().Authorization);
    }

    [Fact]
    public async Task Without_a_token_a_refused_credential_keeps_the_state_and_is_reported()
    {
        Serve(null, credential: "kmc_1");
        await Agent().RunOnceAsync(default);
        Serve(null, credential: "kmc_2");
        await Assert.ThrowsAsync<CredentialRefusedException>(() => Agent(token: null).RunOnceAsync(default));
        Assert.Single(_server.Requests, r => r.PathAndQuery == ProtocolPaths.Enroll);
    }

    /// <summary>Serves as <see cref="Serve"/>, but answers the first <paramref name="busy"/> enrollments 503.</summary>
    private void ServeAfterBusy(int busy)
    {
        Serve(null);
        var serve = _server.Handler;
        var refused = 0;
        _server.Handler = r => r.PathAndQuery == ProtocolPaths.Enroll && Interlocked.Increment(ref refused) <= busy
            ? new(503, FakeServer.Problem(503, "enrolling too many machines, come back later"))
            : serve(r);
    }

    [Fact]
    public async Task A_first_check_waits_out_a_busy_server_and_enrolls_when_it_answers()
    {
        ServeAfterBusy(2);
        var check = await Agent().CheckPatientlyAsync(TimeSpan.FromMinutes(2), default);
        Assert.True(check.UpToDate, check.Detail);
        Assert.Equal(3, _server.Requests.Count(r => r.PathAndQuery == ProtocolPaths.Enroll));
        Assert.Equal(2, _log.Count(line => line.Contains("retrying in", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task A_first_check_gives_up_on_a_server_still_busy_when_the_wait_is_over()
    {
        ServeAfterBusy(int.MaxValue);
        var refused = await Assert.ThrowsAsync<ServerUnavailableException>(
            () => Agent().CheckPatientlyAsync(TimeSpan.Zero, default));
        Assert.Contains("after waiting 0 s", refused.Message);
        Assert.Single(_server.Requests, r => r.PathAndQuery == ProtocolPaths.Enroll);
    }

    [Fact]
    public async Task A_first_check_with_a_token_the_server_refuses_fails_at_once_without_waiting()
    {
        Serve(null);
        var refused = await Assert.ThrowsAsync<AgentException>(
            () => Agent(token: "ket_unknown").CheckPatientlyAsync(TimeSpan.FromMinutes(5), default));
        Assert.Contains("refused the enrollment token", refused.Message);
        Assert.Single(_server.Requests, r => r.PathAndQuery == ProtocolPaths.Enroll);
    }

    [Fact]
    public async Task A_bundle_signed_for_another_build_is_refused_reported_and_nothing_is_installed()
    {
        var bundle = Bundle.Create(File.ReadAllBytes("/bin/true"),
            Inputs.Description(Running with { BuildId = BuildId.Parse("00112233") }, 2), _key).ToArray();
        Serve(bundle);
        var result = await Agent().RunOnceAsync(default);
        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("same release, different build", result.Detail);
        // The server saw "applying", then the refusal with its reason.
        var states = CheckIns.Select(r => r.Json.GetProperty("state").GetString()).ToList();
        Assert.Contains("applying", states);
        Assert.Contains("same release, different build", CheckIns.Last().Json.GetProperty("detail").GetString());
        Assert.Empty(new PatchStore(Paths, RunningKernel.Release).List());
        Assert.Equal("apply-failed", new PatchStore(Paths, RunningKernel.Release).LastAttempt!.Outcome);
    }

    [Fact]
    public async Task A_bundle_from_an_untrusted_publisher_is_refused()
    {
        using var other = PublisherKey.Generate();
        Serve(Bundle.Create(File.ReadAllBytes("/bin/true"), Inputs.Description(Running, 2), other).ToArray());
        var result = await Agent().RunOnceAsync(default);
        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("not in trust store", result.Detail);
        Assert.Empty(new PatchStore(Paths, RunningKernel.Release).List());
    }

    [Fact]
    public async Task A_server_that_serves_other_bytes_than_it_offered_is_caught_before_verification()
    {
        var bundle = Bundle.Create(File.ReadAllBytes("/bin/true"), Inputs.Description(Running, 2), _key).ToArray();
        Serve(bundle);
        var handler = _server.Handler;
        _server.Handler = r => r.PathAndQuery.StartsWith(ProtocolPaths.BundlePrefix, StringComparison.Ordinal)
            ? new(200, bundle[..^1], "application/octet-stream") : handler(r);
        var result = await Agent().RunOnceAsync(default);
        Assert.Equal(ExitCode.InputRefused, result.ExitCode);
        Assert.Contains("substituted in transit", result.Detail);
    }

    [Fact]
    public async Task When_the_servers_epoch_moves_the_agent_checks_in_at_once_not_at_its_next_interval()
    {
        Serve(null);
        var serve = _server.Handler;
        // Check-ins report epoch 1; the events long-poll answers epoch 2 (a revoke happened), then holds nothing new.
        _server.Handler = r => r.PathAndQuery.StartsWith(ProtocolPaths.Events, StringComparison.Ordinal)
            ? new(200, new EventsResponse(2))
            : serve(r);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var run = Agent().RunAsync(stop.Token);
        while (!stop.IsCancellationRequested && CheckIns.Count() < 2) await Task.Delay(100);
        await Task.Delay(1500);
        stop.Cancel();
        await run;
        // The check interval is an hour: the second check-in came from the epoch, and polling did not spin.
        Assert.Equal(2, CheckIns.Count());
        Assert.Contains(_server.Requests, r => r.PathAndQuery == ProtocolPaths.EventsAfter(1));
        Assert.InRange(_server.Requests.Count(r =>
            r.PathAndQuery.StartsWith(ProtocolPaths.Events, StringComparison.Ordinal)), 1, 3);
        lock (_log) Assert.Contains(_log, l => l.Contains("epoch moved to 2"));
    }

    [Fact]
    public async Task The_agent_backs_off_while_the_server_is_unavailable_and_recovers()
    {
        Serve(null);
        var serve = _server.Handler;
        var calls = 0;
        _server.Handler = r => Interlocked.Increment(ref calls) <= 1
            ? new(503, FakeServer.Problem(503, "maintenance"), "application/problem+json", new Dictionary<string,
            string>
            { ["Retry-After"] = "1" })
            : serve(r);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var run = Agent().RunAsync(stop.Token);
        while (!stop.IsCancellationRequested && !_server.Requests.Any(r => r.PathAndQuery == ProtocolPaths.CheckIn))
            await Task.Delay(100);
        stop.Cancel();
        await run;
        lock (_log) Assert.Contains(_log, l => l.Contains("maintenance") && l.Contains("retrying in"));
        Assert.Contains(_server.Requests, r => r.PathAndQuery == ProtocolPaths.CheckIn);
    }
}
