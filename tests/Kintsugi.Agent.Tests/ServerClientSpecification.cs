using Kintsugi.Bundles;
using Kintsugi.Protocol;

namespace Kintsugi.Agent.Tests;

/// <summary>The agent's protocol client (docs/protocol.md) against a real HTTP listener.</summary>
public sealed class ServerClientSpecification : IDisposable
{
    private readonly FakeServer _server = new();
    private readonly HttpClient _http = new();
    private static readonly KernelIdentity Kernel = new(KernelRelease.Parse("6.1.0-56-cloud-amd64"),
        BuildId.Parse("3b43fad5034874490492495d552c0af6a5fab235"), "6.1.158-1");

    public void Dispose()
    {
        _http.Dispose();
        _server.Dispose();
    }

    private ServerClient Client => new(_http, _server.Address, "0.1.0");

    private static CheckInRequest CheckIn(PatchState state) =>
        new(Kernel, state, 3, Sha256Digest.Of("x"u8), "6.1.158-1", 0, null, "0.1.0");

    [Fact]
    public async Task Enrollment_sends_the_token_and_the_machine_and_returns_the_credential()
    {
        _server.Handler = _ => new(201, new EnrollResponse("m_1", "kmc_secret", 3600, 30));
        var response =
            await Client.EnrollAsync(new EnrollRequest("ket_token", "web-17", "abc123", Kernel, "0.1.0"), default);
        Assert.Equal("kmc_secret", response.Credential);
        var request = Assert.Single(_server.Requests);
        Assert.Equal(("POST", ProtocolPaths.Enroll), (request.Method, request.PathAndQuery));
        Assert.Null(request.Authorization);
        Assert.Equal("kintsugi-agent/0.1.0", request.UserAgent);
        Assert.Equal("ket_token", request.Json.GetProperty("token").GetString());
        Assert.Equal("abc123", request.Json.GetProperty("machineId").GetString());
        Assert.Equal("3b43fad5034874490492495d552c0af6a5fab235",
            request.Json.GetProperty("kernel").GetProperty("buildId").GetString());
    }

    [Fact]
    public async Task A_refused_enrollment_token_says_so_with_the_servers_detail()
    {
        _server.Handler = _ =>
            new(401, FakeServer.Problem(401, "token ket_x expired on 2026-01-01"), "application/problem+json");
        var error = await Assert.ThrowsAsync<AgentException>(() =>
            Client.EnrollAsync(new EnrollRequest("ket_x", "h", "m", Kernel, "0.1.0"), default));
        Assert.Contains("token ket_x expired on 2026-01-01", error.Message);
    }

    [Fact]
    public async Task Check_in_carries_the_credential_and_the_state_word_and_reads_the_offer()
    {
        var digest = Sha256Digest.Of("bundle"u8);
        _server.Handler = _ => new(200, new CheckInResponse(CheckInAction.Apply,
            new ReleaseOffer(4, digest, 6, ProtocolPaths.Bundle(digest)), 600, 30, 17));
        var response = await Client.CheckInAsync("kmc_secret", CheckIn(PatchState.AppliedWithBug), default);
        Assert.Equal(CheckInAction.Apply, response.Action);
        Assert.Equal(4, response.Release!.Level);
        Assert.Equal(17, response.Epoch);
        var request = Assert.Single(_server.Requests);
        Assert.Equal("Bearer kmc_secret", request.Authorization);
        Assert.Equal("applied-with-bug", request.Json.GetProperty("state").GetString());
    }

    [Fact]
    public async Task A_refused_credential_is_told_apart_from_other_failures()
    {
        _server.Handler = _ => new(401, FakeServer.Problem(401, "credential revoked"), "application/problem+json");
        var error = await Assert.ThrowsAsync<CredentialRefusedException>(() =>
            Client.CheckInAsync("kmc_old", CheckIn(PatchState.Applied), default));
        Assert.Contains("credential revoked", error.Message);
    }

    [Theory]
    [InlineData(503)]
    [InlineData(429)]
    public async Task An_overloaded_server_is_retried_later_honouring_retry_after(int status)
    {
        _server.Handler = _ => new(status, FakeServer.Problem(status, "busy"), "application/problem+json",
            new Dictionary<string, string> { ["Retry-After"] = "42" });
        var error = await Assert.ThrowsAsync<ServerUnavailableException>(() =>
            Client.CheckInAsync("kmc", CheckIn(PatchState.Applied), default));
        Assert.Equal(TimeSpan.FromSeconds(42), error.RetryAfter);
        Assert.Equal(TimeSpan.FromSeconds(42),
            new Backoff(TimeSpan.FromHours(1), new Random(1)).Next(error.RetryAfter));
    }

    [Fact]
    public async Task An_unreachable_server_is_retried_later()
    {
        var address = _server.Address;
        _server.Dispose();
        var error = await Assert.ThrowsAsync<ServerUnavailableException>(() =>
            new ServerClient(_http, address, "0.1.0").CheckInAsync("kmc", CheckIn(PatchState.Applied), default));
        Assert.Contains("cannot reach", error.Message);
    }

    [Fact]
    public async Task A_connection_closed_before_the_answer_is_reported_with_its_cause()
    {
        // A peer that reads the request and hangs up: HttpClient says only "An error occurred while sending the
        // request"; the user must also see why.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var hangUp = Task.Run(async () =>
        {
            using var peer = await listener.AcceptTcpClientAsync();
            await peer.GetStream().ReadAtLeastAsync(new byte[4096], 1);
        });
        var address = new Uri($"http://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}/");
        var error = await Assert.ThrowsAsync<ServerUnavailableException>(() =>
            new ServerClient(_http, address, "0.1.0").CheckInAsync("kmc", CheckIn(PatchState.Applied), default));
        await hangUp;
        Assert.Equal($"cannot reach {address}: An error occurred while sending the request: The response ended " +
            "prematurely. (ResponseEnded)", error.Message);
    }

    [Fact]
    public async Task A_connection_not_established_within_the_connect_timeout_is_reported_as_such()
    {
        // A peer that accepts TCP and never answers the TLS handshake: the handler's connect timeout ends it, not the
        // exchange's 60 s deadline (the message used to say "did not complete its answer within 60 s (after 1 s)").
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var accepted = listener.AcceptTcpClientAsync();
        using var http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(1) });
        var address = new Uri($"https://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}/");
        var error = await Assert.ThrowsAsync<ServerUnavailableException>(() =>
            new ServerClient(http, address, "0.1.0").CheckInAsync("kmc", CheckIn(PatchState.Applied), default));
        (await accepted).Dispose();
        Assert.StartsWith($"cannot reach {address}: no connection (TCP and TLS handshake) within the connect timeout",
            error.Message);
    }

    [Fact]
    public async Task A_downloaded_bundle_must_have_the_digest_it_was_offered_under()
    {
        var real = "the real bundle"u8.ToArray();
        var digest = Sha256Digest.Of(real);
        _server.Handler = r => r.PathAndQuery == ProtocolPaths.Bundle(digest)
            ? new(200, "substituted bytes!", "application/octet-stream") : new(404);
        var error = await Assert.ThrowsAsync<BundleException>(() => Client.DownloadAsync("kmc",
            new ReleaseOffer(2, digest, real.Length + 3, ProtocolPaths.Bundle(digest)), default));
        Assert.Equal(BundleFailure.ModuleMismatch, error.Failure);
        Assert.Contains("substituted in transit", error.Message);

        _server.Handler = _ => new(200, real, "application/octet-stream");
        Assert.Equal(real, await Client.DownloadAsync("kmc",
            new ReleaseOffer(2, digest, real.Length, ProtocolPaths.Bundle(digest)), default));
        Assert.All(_server.Requests, r => Assert.Equal("Bearer kmc", r.Authorization));
    }

    [Fact]
    public async Task A_download_longer_than_announced_is_cut_off()
    {
        var digest = Sha256Digest.Of("x"u8);
        _server.Handler = _ => new(200, new byte[100_000], "application/octet-stream");
        var error = await Assert.ThrowsAsync<BundleException>(() =>
            Client.DownloadAsync("kmc", new ReleaseOffer(2, digest, 1000, ProtocolPaths.Bundle(digest)), default));
        Assert.Contains("exceeds the announced 1000 bytes", error.Message);
    }

    [Fact]
    public async Task The_credential_is_never_sent_to_another_host()
    {
        var digest = Sha256Digest.Of("x"u8);
        var error = await Assert.ThrowsAsync<AgentException>(() =>
            Client.DownloadAsync("kmc", new ReleaseOffer(2, digest, 1, "https://evil.example/" + digest), default));
        Assert.Contains("another place", error.Message);
        Assert.Empty(_server.Requests);
    }

    [Fact]
    public async Task The_events_long_poll_asks_after_the_known_epoch()
    {
        _server.Handler = _ => new(200, new EventsResponse(18));
        Assert.Equal(18, (await Client.EventsAsync("kmc", 17, default)).Epoch);
        Assert.Equal(ProtocolPaths.EventsAfter(17), Assert.Single(_server.Requests).PathAndQuery);
    }

    [Fact]
    public void Backoff_doubles_from_five_seconds_with_full_jitter_up_to_the_cap()
    {
        var backoff = new Backoff(TimeSpan.FromSeconds(60), new Random(7));
        var ceilings = new[] { 5, 10, 20, 40, 60, 60, 60 };
        foreach (var ceiling in ceilings)
        {
            var delay = backoff.Next();
            Assert.InRange(delay, TimeSpan.Zero, TimeSpan.FromSeconds(ceiling));
        }
        // Over many draws, full jitter spreads across the whole range, not just near the ceiling.
        var draws = Enumerable.Range(0, 200).Select(_ => backoff.Next().TotalSeconds).ToList();
        Assert.InRange(draws.Min(), 0, 10);
        Assert.InRange(draws.Max(), 50, 60);
    }

    [Fact]
    public void Check_in_intervals_vary_by_ten_percent_either_way()
    {
        var random = new Random(3);
        var intervals =
            Enumerable.Range(0, 500).Select(_ => Backoff.Jitter(TimeSpan.FromHours(1), random).TotalMinutes).ToList();
        Assert.InRange(intervals.Min(), 54, 56);
        Assert.InRange(intervals.Max(), 64, 66);
    }
}
