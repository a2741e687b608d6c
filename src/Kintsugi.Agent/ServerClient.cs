using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Kintsugi.Bundles;
using Kintsugi.Protocol;

namespace Kintsugi.Agent;

/// <summary>The server could not be reached or asked to come back later (network error, 5xx, 429): retry with
/// backoff.</summary>
public sealed class ServerUnavailableException(string message, TimeSpan? retryAfter = null,
    Exception? inner = null) : KintsugiException(message, inner)
{
    public TimeSpan? RetryAfter { get; } = retryAfter;

    public override ExitCode ExitCode => ExitCode.Environment;
}

/// <summary>The server refused the machine's credential (401): re-enroll or wait.</summary>
public sealed class CredentialRefusedException(string message) : KintsugiException(message)
{
    public override ExitCode ExitCode => ExitCode.Environment;
}

/// <summary>
/// The agent's side of docs/protocol.md: enroll, check in, download bundles by digest, long-poll events.
/// It trusts nothing the server sends beyond what verification later proves.
/// </summary>
public sealed class ServerClient(HttpClient http, Uri server, string agentVersion, ClientLimits? bounds = null)
{
    private readonly ClientLimits limits = bounds ?? new ClientLimits();

    /// <summary>
    /// The agent's HTTP client. With <c>server-ca</c> it trusts only that file's certificates: the server's own
    /// (pinned, as its generated self-signed tls/server.crt is) or a CA that issued the server's; else the system's
    /// CAs.
    /// </summary>
    public static HttpClient CreateHttpClient(AgentConfig config)
    {
        var handler = new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(10) };
        // The configured proxy; without one, the environment's (https_proxy, no_proxy) as for any program.
        if (config.Proxy is { } proxy) handler.Proxy = new System.Net.WebProxy(proxy);
        if (config.ServerCertificate is { } path)
        {
            var trusted = new X509Certificate2Collection();
            try { trusted.ImportFromPemFile(path); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
            {
                throw new AgentException($"cannot read the server certificate {path} (server-ca): {e.Message}",
                    ExitCode.Environment, e);
            }
            if (trusted.Count == 0)
                throw new AgentException($"{path} (server-ca) holds no PEM certificate", ExitCode.Environment);
            handler.SslOptions.RemoteCertificateValidationCallback = new PinnedServerCertificates(trusted).Validate;
        }
        // Deadlines are per exchange (ClientLimits); the client's own timeout is only a backstop above the longest of
        // them.
        handler.ConnectTimeout = TimeSpan.FromSeconds(30);
        return new HttpClient(handler) { Timeout = TimeSpan.FromMinutes(15) };
    }

    public async Task<EnrollResponse> EnrollAsync(EnrollRequest request, CancellationToken cancellation)
    {
        var response =
            await ExchangeAsync(HttpMethod.Post, ProtocolPaths.Enroll, null,
            Json(request, ProtocolJson.Default.EnrollRequest), "enrollment", limits.JsonDeadline,
            limits.MaxJsonResponse, cancellation);
        if (response.Status == HttpStatusCode.Unauthorized)
            throw new AgentException($"the server refused the enrollment token: {Detail(response)}; ask an operator " +
                $"for a valid token", ExitCode.InputRefused);
        if (response.Status == HttpStatusCode.Conflict)
            throw new AgentException($"the server refused to enroll this machine again: {Detail(response)}",
                ExitCode.InputRefused);
        EnsureSuccess(response, "enrollment");
        return Read(response, ProtocolJson.Default.EnrollResponse);
    }

    public async Task<CheckInResponse>
        CheckInAsync(string credential, CheckInRequest request, CancellationToken cancellation)
    {
        var response =
            await ExchangeAsync(HttpMethod.Post, ProtocolPaths.CheckIn, credential,
            Json(request, ProtocolJson.Default.CheckInRequest), "check-in", limits.JsonDeadline, limits.MaxJsonResponse,
            cancellation);
        EnsureSuccess(response, "check-in");
        return Read(response, ProtocolJson.Default.CheckInResponse);
    }

    public async Task<EventsResponse> EventsAsync(string credential, long epoch, CancellationToken cancellation)
    {
        // The server holds the poll for its events wait (at most 300 s); beyond that and the usual deadline, the
        // connection is dead.
        var response = await ExchangeAsync(HttpMethod.Get, ProtocolPaths.EventsAfter(epoch), credential, null, "events",
            limits.JsonDeadline + ClientLimits.LongestEventsWait, limits.MaxJsonResponse, cancellation,
            idle: limits.IdleTimeout + ClientLimits.LongestEventsWait);
        EnsureSuccess(response, "events");
        return Read(response, ProtocolJson.Default.EventsResponse);
    }

    /// <summary>Downloads a bundle (at most the announced size and never more than a bundle can be, within the download
    /// deadline) and checks it is the one named.</summary>
    public async Task<byte[]> DownloadAsync(string credential, ReleaseOffer offer, CancellationToken cancellation)
    {
        // The offer's URL is relative to the server; an absolute URL elsewhere is not followed (the credential would
        // leak). (On Unix, Uri also reads "/path" as an absolute file URI, so a path is recognised by its slash.)
        var path = offer.Url.StartsWith('/') ? offer.Url
            : Uri.TryCreate(offer.Url, UriKind.Absolute, out var absolute) && absolute.Scheme is "https" or "http"
            && absolute.Authority == server.Authority ? absolute.PathAndQuery
            : throw new AgentException($"the server offered a bundle at another place ({offer.Url}); refusing to " +
            $"send the credential there", ExitCode.InputRefused);
        var limit = Math.Min(Bundle.MaxLength, offer.Size > 0 ? offer.Size : Bundle.MaxLength);
        var response = await ExchangeAsync(HttpMethod.Get, path, credential, null, $"the download of {offer.Bundle}",
            limits.DownloadDeadline, limit, cancellation, tooLong: read =>
            new BundleException(BundleFailure.Malformed,
            $"the download of {offer.Bundle} exceeds the announced {limit} bytes; discarded"));
        EnsureSuccess(response, "bundle download");
        var bytes = response.Body;
        var digest = Sha256Digest.Of(bytes);
        if (digest != offer.Bundle)
            throw new BundleException(BundleFailure.ModuleMismatch, $"the downloaded bundle's sha256 is {digest}, " +
                $"not {offer.Bundle} as offered: corrupted or substituted in transit; discarded");
        return bytes;
    }

    /// <summary>A response read whole: status, Retry-After, body.</summary>
    private sealed record Exchange(HttpStatusCode Status, string? Reason, TimeSpan? RetryAfter, byte[] Body);

    /// <summary>
    /// One request and its whole response, bounded: the response must complete within <paramref name="deadline"/>,
    /// no read may wait longer than the idle timeout for a byte, and the body may not exceed <paramref
    /// name="maxBytes"/>. A server that stalls (after its headers or anywhere else) ends the exchange as unavailable,
    /// to be retried with backoff, never holding up the agent's later checks, applies and revokes.
    /// </summary>
    private async Task<Exchange> ExchangeAsync(HttpMethod method, string path, string? credential, HttpContent? content,
        string what, TimeSpan deadline, long maxBytes,
        CancellationToken cancellation, TimeSpan? idle = null, Func<long, Exception>? tooLong = null)
    {
        using var request = new HttpRequestMessage(method, new Uri(server, path.TrimStart('/'))) { Content = content };
        request.Headers.UserAgent.ParseAdd($"kintsugi-agent/{agentVersion}");
        if (credential is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", credential);
        using var overall = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        overall.CancelAfter(deadline);
        var idleTimeout = idle ?? limits.IdleTimeout;
        var started = DateTime.UtcNow;
        try
        {
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, overall.Token);
            if (response.Content.Headers.ContentLength is { } announced && announced > maxBytes)
                throw tooLong?.Invoke(announced) ?? new AgentException($"{what}: the server's response is " +
                    $"{announced} bytes, more than the {maxBytes} allowed", ExitCode.InputRefused);
            await using var stream = await response.Content.ReadAsStreamAsync(overall.Token);
            using var buffer = new MemoryStream();
            var chunk = new byte[81920];
            while (true)
            {
                using var step = CancellationTokenSource.CreateLinkedTokenSource(overall.Token);
                step.CancelAfter(idleTimeout);
                int read;
                try { read = await stream.ReadAsync(chunk, step.Token); }
                catch (OperationCanceledException) when (!overall.IsCancellationRequested)
                {
                    throw new ServerUnavailableException($"{what}: {server} sent nothing for " +
                        $"{idleTimeout.TotalSeconds:0} s after {buffer.Length} bytes; connection dropped");
                }
                if (read == 0) break;
                if (buffer.Length + read > maxBytes)
                    throw tooLong?.Invoke(buffer.Length + read) ?? new AgentException($"{what}: the server's " +
                        $"response exceeds the {maxBytes} bytes allowed; discarded", ExitCode.InputRefused);
                buffer.Write(chunk, 0, read);
            }
            var retryAfter = response.Headers.RetryAfter is { } header
                ? header.Delta ?? (header.Date is { } date ? date - DateTimeOffset.UtcNow : null) : null;
            return new Exchange(response.StatusCode, response.ReasonPhrase, retryAfter, buffer.ToArray());
        }
        catch (HttpRequestException e)
        {
            throw new ServerUnavailableException($"cannot reach {server}: {TransportFailure.Describe(e)}", null, e);
        }
        catch (IOException e)
        {
            throw new ServerUnavailableException($"{what}: the connection to {server} failed: " +
            $"{e.Message}", null, e);
        }
        catch (OperationCanceledException e) when (!cancellation.IsCancellationRequested
            && !overall.IsCancellationRequested)
        {
            // Not this exchange's deadline: the handler's connect timeout, which covers the TLS handshake too (a
            // machine too slow for it, or a port that accepts and never answers).
            throw new ServerUnavailableException($"cannot reach {server}: no connection (TCP and TLS handshake) " +
                $"within the connect timeout; gave up after {(DateTime.UtcNow - started).TotalSeconds:0} s", null, e);
        }
        catch (OperationCanceledException e) when (!cancellation.IsCancellationRequested)
        {
            throw new ServerUnavailableException($"{what}: {server} did not complete its answer within " +
                $"{deadline.TotalSeconds:0} s (after {(DateTime.UtcNow - started).TotalSeconds:0} s)", null, e);
        }
    }

    private static void EnsureSuccess(Exchange response, string what)
    {
        var status = (int)response.Status;
        if (status is >= 200 and < 300) return;
        var detail = Detail(response);
        if (status == 401)
            throw new CredentialRefusedException($"the server refused this machine's credential ({what}): {detail}");
        if (status is 429 or >= 500) throw new ServerUnavailableException(
            $"{what}: the server answered {status}: {detail}", response.RetryAfter);
        throw new AgentException($"{what}: the server answered {status}: {detail}", ExitCode.InputRefused);
    }

    /// <summary>The problem document's detail (logged verbatim), or the status line.</summary>
    private static string Detail(Exchange response)
    {
        var body = Encoding.UTF8.GetString(response.Body);
        try
        {
            if (JsonSerializer.Deserialize(body, ProtocolJson.Default.ProblemDocument) is { } problem)
                return problem.Detail ?? problem.Title;
        }
        catch (JsonException) { }
        return $"{(int)response.Status} {response.Reason}"
            + (body.Length > 0 ? $" ({body[..Math.Min(200, body.Length)]})" : "");
    }

    private static ByteArrayContent Json<T>(T value, JsonTypeInfo<T> type)
    {
        var content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(value, type));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json", Encoding.UTF8.WebName);
        return content;
    }

    private static T Read<T>(Exchange response, JsonTypeInfo<T> type)
    {
        try
        {
            return JsonSerializer.Deserialize(response.Body, type)
                ?? throw new AgentException($"the server sent JSON null for {typeof(T).Name}", ExitCode.InputRefused);
        }
        catch (JsonException e)
        {
            throw new AgentException($"the server's {typeof(T).Name} is not valid protocol v1 JSON: {e.Message}",
                ExitCode.InputRefused, e);
        }
    }
}

/// <summary>
/// The agent's bounds on every exchange with the server: a deadline for a whole JSON answer and for a whole
/// bundle download, an idle timeout between bytes, and a size cap on JSON answers (bundles are capped by their
/// announced size and the format's maximum).
/// </summary>
public sealed record ClientLimits
{
    /// <summary>The longest events wait a server may hold a poll for (docs/protocol.md).</summary>
    public static readonly TimeSpan LongestEventsWait = TimeSpan.FromSeconds(300);

    public TimeSpan JsonDeadline { get; init; } = TimeSpan.FromSeconds(60);
    public TimeSpan DownloadDeadline { get; init; } = TimeSpan.FromMinutes(10);
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(30);
    public long MaxJsonResponse { get; init; } = 1024 * 1024;
}

/// <summary>Exponential backoff with full jitter, from 5 s up to a cap (docs/protocol.md), honouring
/// Retry-After.</summary>
public sealed class Backoff(TimeSpan cap, Random? random = null)
{
    public static readonly TimeSpan Initial = TimeSpan.FromSeconds(5);
    private readonly Random _random = random ?? Random.Shared;
    private int _failures;

    public int Failures => _failures;

    public TimeSpan Next(TimeSpan? retryAfter = null)
    {
        var ceiling =
            TimeSpan.FromTicks((long)Math.Min(cap.Ticks, Initial.Ticks * Math.Pow(2, Math.Min(_failures, 30))));
        _failures++;
        var delay = TimeSpan.FromTicks((long)(_random.NextDouble() * ceiling.Ticks));
        return retryAfter is { } after && after > delay ? after : delay;
    }

    public void Reset() => _failures = 0;

    /// <summary>A check-in interval with ±10 % jitter, so a fleet restarted together spreads out.</summary>
    public static TimeSpan Jitter(TimeSpan interval, Random? random = null) =>
        TimeSpan.FromTicks((long)(interval.Ticks * (0.9 + 0.2 * (random ?? Random.Shared).NextDouble())));
}
