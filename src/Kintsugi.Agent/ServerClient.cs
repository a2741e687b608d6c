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

/// <summary>The server could not be reached or asked to come back later (network error, 5xx, 429): retry with backoff.</summary>
public sealed class ServerUnavailableException(string message, TimeSpan? retryAfter = null, Exception? inner = null) : KintsugiException(message, inner)
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
public sealed class ServerClient(HttpClient http, Uri server, string agentVersion)
{
    /// <summary>
    /// The agent's HTTP client. With <c>server-ca</c> it trusts only that file's certificates: the server's own
    /// (pinned, as its generated self-signed tls/server.crt is) or a CA that issued the server's; else the system's CAs.
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
                throw new AgentException($"cannot read the server certificate {path} (server-ca): {e.Message}", ExitCode.Environment, e);
            }
            if (trusted.Count == 0) throw new AgentException($"{path} (server-ca) holds no PEM certificate", ExitCode.Environment);
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, presented, errors) =>
            {
                if (certificate is null) return false;
                var raw = certificate.GetRawCertData();
                if (trusted.Any(t => t.RawData.AsSpan().SequenceEqual(raw))) return true;
                if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch)) return false;
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.AddRange(trusted);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                if (presented is not null) foreach (var element in presented.ChainElements) chain.ChainPolicy.ExtraStore.Add(element.Certificate);
                using var leaf = X509CertificateLoader.LoadCertificate(raw);
                return chain.Build(leaf);
            };
        }
        return new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(120) };
    }

    public async Task<EnrollResponse> EnrollAsync(EnrollRequest request, CancellationToken cancellation)
    {
        using var response = await SendAsync(HttpMethod.Post, ProtocolPaths.Enroll, null, Json(request, ProtocolJson.Default.EnrollRequest), cancellation);
        if (response.StatusCode == HttpStatusCode.Unauthorized)
            throw new AgentException($"the server refused the enrollment token: {await DetailAsync(response, cancellation)}; ask an operator for a valid token", ExitCode.InputRefused);
        await EnsureSuccessAsync(response, "enrollment", cancellation);
        return await ReadAsync(response, ProtocolJson.Default.EnrollResponse, cancellation);
    }

    public async Task<CheckInResponse> CheckInAsync(string credential, CheckInRequest request, CancellationToken cancellation)
    {
        using var response = await SendAsync(HttpMethod.Post, ProtocolPaths.CheckIn, credential, Json(request, ProtocolJson.Default.CheckInRequest), cancellation);
        await EnsureSuccessAsync(response, "check-in", cancellation);
        return await ReadAsync(response, ProtocolJson.Default.CheckInResponse, cancellation);
    }

    public async Task<EventsResponse> EventsAsync(string credential, long epoch, CancellationToken cancellation)
    {
        using var response = await SendAsync(HttpMethod.Get, ProtocolPaths.EventsAfter(epoch), credential, null, cancellation);
        await EnsureSuccessAsync(response, "events", cancellation);
        return await ReadAsync(response, ProtocolJson.Default.EventsResponse, cancellation);
    }

    /// <summary>Downloads a bundle (at most <paramref name="announcedSize"/> and never more than a bundle can be) and checks it is the one named.</summary>
    public async Task<byte[]> DownloadAsync(string credential, ReleaseOffer offer, CancellationToken cancellation)
    {
        // The offer's URL is relative to the server; an absolute URL elsewhere is not followed (the credential would leak).
        // (On Unix, Uri also reads "/path" as an absolute file URI, so a path is recognised by its slash.)
        var path = offer.Url.StartsWith('/') ? offer.Url
            : Uri.TryCreate(offer.Url, UriKind.Absolute, out var absolute) && absolute.Scheme is "https" or "http" && absolute.Authority == server.Authority ? absolute.PathAndQuery
            : throw new AgentException($"the server offered a bundle at another place ({offer.Url}); refusing to send the credential there", ExitCode.InputRefused);
        using var response = await SendAsync(HttpMethod.Get, path, credential, null, cancellation, HttpCompletionOption.ResponseHeadersRead);
        await EnsureSuccessAsync(response, "bundle download", cancellation);
        var limit = Math.Min(Bundle.MaxLength, offer.Size > 0 ? offer.Size : Bundle.MaxLength);
        await using var stream = await response.Content.ReadAsStreamAsync(cancellation);
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await stream.ReadAsync(chunk, cancellation)) > 0)
        {
            if (buffer.Length + read > limit)
                throw new BundleException(BundleFailure.Malformed, $"the download of {offer.Bundle} exceeds the announced {limit} bytes; discarded");
            buffer.Write(chunk, 0, read);
        }
        var bytes = buffer.ToArray();
        var digest = Sha256Digest.Of(bytes);
        if (digest != offer.Bundle)
            throw new BundleException(BundleFailure.ModuleMismatch, $"the downloaded bundle's sha256 is {digest}, not {offer.Bundle} as offered: corrupted or substituted in transit; discarded");
        return bytes;
    }

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, string? credential, HttpContent? content, CancellationToken cancellation,
        HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead)
    {
        using var request = new HttpRequestMessage(method, new Uri(server, path.TrimStart('/'))) { Content = content };
        request.Headers.UserAgent.ParseAdd($"kintsugi-agent/{agentVersion}");
        if (credential is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", credential);
        try { return await http.SendAsync(request, completion, cancellation); }
        catch (HttpRequestException e) { throw new ServerUnavailableException($"cannot reach {server}: {e.Message}", null, e); }
        catch (TaskCanceledException e) when (!cancellation.IsCancellationRequested) { throw new ServerUnavailableException($"{server} did not answer in time", null, e); }
    }

    private static async Task EnsureSuccessAsync(HttpResponseMessage response, string what, CancellationToken cancellation)
    {
        if (response.IsSuccessStatusCode) return;
        var detail = await DetailAsync(response, cancellation);
        var status = (int)response.StatusCode;
        if (status == 401) throw new CredentialRefusedException($"the server refused this machine's credential ({what}): {detail}");
        if (status is 429 or >= 500)
        {
            var retryAfter = response.Headers.RetryAfter is { } header
                ? header.Delta ?? (header.Date is { } date ? date - DateTimeOffset.UtcNow : null) : null;
            throw new ServerUnavailableException($"{what}: the server answered {status}: {detail}", retryAfter);
        }
        throw new AgentException($"{what}: the server answered {status}: {detail}", ExitCode.InputRefused);
    }

    /// <summary>The problem document's detail (logged verbatim), or the status line.</summary>
    private static async Task<string> DetailAsync(HttpResponseMessage response, CancellationToken cancellation)
    {
        var body = await response.Content.ReadAsStringAsync(cancellation);
        try
        {
            if (JsonSerializer.Deserialize(body, ProtocolJson.Default.ProblemDocument) is { } problem)
                return problem.Detail ?? problem.Title;
        }
        catch (JsonException) { }
        return $"{(int)response.StatusCode} {response.ReasonPhrase}" + (body.Length > 0 ? $" ({body[..Math.Min(200, body.Length)]})" : "");
    }

    private static ByteArrayContent Json<T>(T value, JsonTypeInfo<T> type)
    {
        var content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(value, type));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json", Encoding.UTF8.WebName);
        return content;
    }

    private static async Task<T> ReadAsync<T>(HttpResponseMessage response, JsonTypeInfo<T> type, CancellationToken cancellation)
    {
        try
        {
            return await JsonSerializer.DeserializeAsync(await response.Content.ReadAsStreamAsync(cancellation), type, cancellation)
                ?? throw new AgentException($"the server sent JSON null for {typeof(T).Name}", ExitCode.InputRefused);
        }
        catch (JsonException e)
        {
            throw new AgentException($"the server's {typeof(T).Name} is not valid protocol v1 JSON: {e.Message}", ExitCode.InputRefused, e);
        }
    }
}

/// <summary>Exponential backoff with full jitter, from 5 s up to a cap (docs/protocol.md), honouring Retry-After.</summary>
public sealed class Backoff(TimeSpan cap, Random? random = null)
{
    public static readonly TimeSpan Initial = TimeSpan.FromSeconds(5);
    private readonly Random _random = random ?? Random.Shared;
    private int _failures;

    public int Failures => _failures;

    public TimeSpan Next(TimeSpan? retryAfter = null)
    {
        var ceiling = TimeSpan.FromTicks((long)Math.Min(cap.Ticks, Initial.Ticks * Math.Pow(2, Math.Min(_failures, 30))));
        _failures++;
        var delay = TimeSpan.FromTicks((long)(_random.NextDouble() * ceiling.Ticks));
        return retryAfter is { } after && after > delay ? after : delay;
    }

    public void Reset() => _failures = 0;

    /// <summary>A check-in interval with ±10 % jitter, so a fleet restarted together spreads out.</summary>
    public static TimeSpan Jitter(TimeSpan interval, Random? random = null) =>
        TimeSpan.FromTicks((long)(interval.Ticks * (0.9 + 0.2 * (random ?? Random.Shared).NextDouble())));
}
