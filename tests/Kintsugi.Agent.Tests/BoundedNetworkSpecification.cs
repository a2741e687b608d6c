using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Kintsugi.Bundles;
using Kintsugi.Protocol;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// A server that answers its headers and then stalls, or answers without end, over a real socket: every exchange
/// of the agent ends within its bounds (ClientLimits) and is reported as the server being unavailable or refused.
/// </summary>
public sealed class BoundedNetworkSpecification : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly HttpClient _http = new();
    private readonly List<Socket> _held = [];

    private static readonly ClientLimits Tight =
        new()
        {
            JsonDeadline = TimeSpan.FromSeconds(4),
            DownloadDeadline = TimeSpan.FromSeconds(6),
            IdleTimeout = TimeSpan.FromSeconds(2),
            MaxJsonResponse = 64 * 1024
        };
    private static readonly KernelIdentity Kernel =
        new(KernelRelease.Parse("6.1.0-56-cloud-amd64"), BuildId.Parse("3b43fad5034874490492495d552c0af6a5fab235"));

    public BoundedNetworkSpecification() => _listener.Start();

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        lock (_held) foreach (var socket in _held) socket.Dispose();
        _http.Dispose();
    }

    private Uri Address => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/");

    private ServerClient Client => new(_http, Address, "0.1.0", Tight);

    /// <summary>Accepts connections, reads each request's head, sends <paramref name="head"/> and then <paramref
    /// name="body"/> slowly, then holds the connection open.</summary>
    private void Serve(string head, Func<Socket, CancellationToken, Task>? body = null) => _ = Task.Run(async () =>
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try { socket = await _listener.AcceptSocketAsync(_stop.Token); }
            catch (Exception) { return; }
            lock (_held) _held.Add(socket);
            _ = Task.Run(async () =>
            {
                var buffer = new byte[65536];
                var received = "";
                while (!received.Contains("\r\n\r\n") && await socket.ReceiveAsync(buffer, _stop.Token) is > 0
                    and var n) received += Encoding.ASCII.GetString(buffer, 0, n);
                await socket.SendAsync(Encoding.ASCII.GetBytes(head), _stop.Token);
                if (body is not null) await body(socket, _stop.Token);
                // ... and then nothing: the connection stays open, as a half-dead server or middlebox leaves it.
            });
        }
    });

    [Fact]
    public async Task A_download_that_stalls_after_the_headers_ends_within_the_idle_timeout()
    {
        Serve("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n", (s, c) =>
            s.SendAsync(new byte[1000], c).AsTask());
        var digest = Sha256Digest.Of("x"u8);
        var clock = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<ServerUnavailableException>(() =>
            Client.DownloadAsync("kmc", new ReleaseOffer(2, digest, 100000, ProtocolPaths.Bundle(digest)), default));

        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(6));
        Assert.Contains("sent nothing for 2 s after 1000 bytes", error.Message);
    }

    [Fact]
    public async Task A_download_that_trickles_forever_ends_at_its_deadline()
    {
        Serve("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n",
            async (s, c) =>
        {
            for (var i = 0; i < 100
                && !c.IsCancellationRequested; i++) { await s.SendAsync(new byte[10], c); await Task.Delay(500, c); }
        });
        var digest = Sha256Digest.Of("x"u8);
        var clock = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<ServerUnavailableException>(() =>
            Client.DownloadAsync("kmc", new ReleaseOffer(2, digest, 100000, ProtocolPaths.Bundle(digest)), default));

        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(12));
        Assert.Contains("within 6 s", error.Message);
    }

    [Fact]
    public async Task A_check_in_answer_that_stalls_after_the_headers_ends_within_the_deadline()
    {
        Serve("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"action\":");
        var clock = Stopwatch.StartNew();

        await Assert.ThrowsAsync<ServerUnavailableException>(() =>
            Client.CheckInAsync("kmc",
            new CheckInRequest(Kernel, PatchState.Applied, null, null, null, 0, null, "0.1.0"), default));

        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(6));
    }

    [Fact]
    public async Task A_check_in_answer_larger_than_the_cap_is_refused_unread()
    {
        Serve("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{");

        var error = await Assert.ThrowsAsync<AgentException>(() =>
            Client.CheckInAsync("kmc",
            new CheckInRequest(Kernel, PatchState.Applied, null, null, null, 0, null, "0.1.0"), default));

        Assert.Contains("1000000000 bytes, more than the 65536 allowed", error.Message);
    }
}
