using System.Net;
using System.Text;
using System.Text.Json;
using Kintsugi.Protocol;
using Kintsugi.Testing;

namespace Kintsugi.Agent.Tests;

/// <summary>One request the server received: method, path and query, headers and body.</summary>
internal sealed record
    ReceivedRequest(string Method, string PathAndQuery, string? Authorization, string? UserAgent, string Body)
{
    public JsonElement Json => JsonDocument.Parse(Body).RootElement;
}

/// <summary>
/// A real HTTP listener on the loopback, answering protocol v1 requests with whatever the test decides: the
/// agent's client talks to it over real sockets, as it would to a server.
/// </summary>
internal sealed class FakeServer : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly List<ReceivedRequest> _requests = [];

    public Uri Address { get; }

    public int Port { get; }

    /// <summary>Answers a request: status, body (JSON text or bytes), optional headers.</summary>
    public Func<ReceivedRequest, Response> Handler { get; set; } = _ => new Response(404);

    /// <param name="StallAfter">Announce the whole body, send only this many bytes of it, then hold the connection
    /// open without a word until the server is disposed (a half-dead server or middlebox).</param>
    public sealed record Response(int Status, object? Body = null, string ContentType = "application/json",
        IReadOnlyDictionary<string, string>? Headers = null, int? StallAfter = null);

    /// <param name="anyHost">Also answer requests addressed to other host names (a lab guest reaches the host as
    /// 10.0.2.2).</param>
    public FakeServer(bool anyHost = false)
    {
        var port = Ports.Free();
        Address = new Uri($"http://127.0.0.1:{port}/");
        Port = port;
        _listener.Prefixes.Add(anyHost ? $"http://*:{port}/" : Address.ToString());
        _listener.Start();
        _loop = Task.Run(LoopAsync);
    }

    public IReadOnlyList<ReceivedRequest> Requests { get { lock (_requests) return [.. _requests]; } }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            HttpListenerContext context;
            try { context = await _listener.GetContextAsync(); }
            catch (Exception) when (_stop.IsCancellationRequested) { return; }
            catch (HttpListenerException) { return; }
            var body = await new StreamReader(context.Request.InputStream, Encoding.UTF8).ReadToEndAsync();
            var request = new ReceivedRequest(context.Request.HttpMethod, context.Request.Url!.PathAndQuery,
                context.Request.Headers["Authorization"], context.Request.UserAgent, body);
            lock (_requests) _requests.Add(request);
            Response response;
            try { response = Handler(request); }
            catch (Exception e) { response = new Response(500, Problem(500, e.Message)); }
            context.Response.StatusCode = response.Status;
            context.Response.ContentType = response.ContentType;
            foreach (var (name, value) in response.Headers ?? new Dictionary<string, string>())
                context.Response.Headers[name] = value;
            var bytes = response.Body switch
            {
                null => [],
                byte[] raw => raw,
                string text => Encoding.UTF8.GetBytes(text),
                var value => JsonSerializer.SerializeToUtf8Bytes(value, value.GetType(), ProtocolJson.Default),
            };
            context.Response.ContentLength64 = bytes.Length;
            if (response.StallAfter is { } sent)
            {
                // Not awaited: the stalled exchange must not hold up the next requests (the agent's report of it).
                _ = StallAsync(context, bytes.AsMemory(0, Math.Min(sent, bytes.Length)));
                continue;
            }
            await context.Response.OutputStream.WriteAsync(bytes);
            context.Response.Close();
        }
    }

    private async Task StallAsync(HttpListenerContext context, ReadOnlyMemory<byte> head)
    {
        try
        {
            await context.Response.OutputStream.WriteAsync(head, _stop.Token);
            await context.Response.OutputStream.FlushAsync(_stop.Token);
            await Task.Delay(Timeout.Infinite, _stop.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or HttpListenerException or ObjectDisposedException)
        {
        }
        finally { context.Response.Abort(); }
    }

    public static ProblemDocument Problem(int status, string detail) => new("about:blank", "error", status, detail);

    public void Dispose()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        _listener.Stop();
        _listener.Close();
        try { _loop.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
    }
}
