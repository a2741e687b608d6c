using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Server.Api;
using Kintsugi.Server.Fleet;

namespace Kintsugi.Server.Tests;

public enum Backend { Sqlite, Postgres }

/// <summary>
/// A real server on Kestrel (HTTPS with its generated certificate, a random local port) over a real SQLite
/// file or a real PostgreSQL database, with an admin client, a trusted publisher key and helpers to make
/// signed bundles.
/// </summary>
public sealed class TestServer : IAsyncDisposable
{
    public RunningServer Server { get; private set; } = null!;
    public ServerOptions Options { get; private set; } = null!;
    public Uri BaseAddress { get; private set; } = null!;
    public HttpClient Admin { get; private set; } = null!;
    public string AdminToken { get; private set; } = "";
    public PublisherKey Publisher { get; } = PublisherKey.Generate();
    public X509Certificate2 Certificate { get; private set; } = null!;

    public static async Task<TestServer> StartAsync(Backend backend = Backend.Sqlite, Func<ServerOptions,
        ServerOptions>? configure = null, string? postgres = null, string? dataDirectory = null)
    {
        var server = new TestServer();
        var options = new ServerOptions
        {
            DataDirectory = dataDirectory ?? Directory.CreateTempSubdirectory("kintsugi-server-test-").FullName,
            PostgresConnectionString = backend == Backend.Postgres ? postgres ?? Postgres.NewDatabase() : null,
            Urls = ["https://127.0.0.1:0"],
            EventsWaitSeconds = 20,
            EpochPollInterval = TimeSpan.FromMilliseconds(100),
            PromotionInterval = TimeSpan.FromMinutes(10),
            EnrollmentsPerMinute = 1000,
        };
        server.Options = configure?.Invoke(options) ?? options;
        server.Server = await ServerApp.StartAsync(server.Options);
        server.BaseAddress = new Uri(server.Server.Urls[0].Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal));
        server.Certificate = X509CertificateLoader.LoadCertificateFromFile(
            Path.Combine(server.Options.DataDirectory, "tls", "server.crt"));
        server.AdminToken = server.Server.InitialAdminToken
            ?? File.ReadAllText(Path.Combine(server.Options.DataDirectory, ServerApp.AdminTokenFile)).Trim();
        server.Admin = server.Client(server.AdminToken);
        var trusted =
            await server.Admin.PostAsJsonAsync("/api/v1/keys", new { pem = server.Publisher.PublicKey.ExportPem() });
        Assert.Equal(HttpStatusCode.Created, trusted.StatusCode);
        return server;
    }

    /// <summary>An HTTP client that trusts exactly this server's certificate (pinned), with an optional bearer
    /// token.</summary>
    public HttpClient Client(string? bearer = null, bool cookies = false, bool followRedirects = true)
    {
        var handler = new SocketsHttpHandler
        {
            UseCookies = cookies,
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            AllowAutoRedirect =
                followRedirects,
        };
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, _) =>
            certificate is not null && certificate.GetCertHashString() == Certificate.GetCertHashString();
        var client = new HttpClient(handler) { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        if (bearer is not null) client.DefaultRequestHeaders.Authorization =
            new AuthenticationHeaderValue("Bearer", bearer);
        client.DefaultRequestHeaders.UserAgent.ParseAdd("kintsugi-agent/0.1.0");
        return client;
    }

    public async Task<string> TokenAsync(Role role, string name)
    {
        var response = await Admin.PostAsJsonAsync("/api/v1/api-tokens", new { role = role.ToWire(), name });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
    }

    public async Task<string>
        EnrollmentTokenAsync(string channel = "canary", int? maxUses = null, long? expiresInSeconds = null)
    {
        var response =
            await Admin.PostAsJsonAsync("/api/v1/enrollment-tokens", new { channel, maxUses, expiresInSeconds });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
    }

    /// <summary>Publishes a bundle; returns the release id.</summary>
    public async Task<string> PublishAsync(byte[] bundle)
    {
        var response = await Admin.PostAsync("/api/v1/releases", new ByteArrayContent(
            bundle)
        { Headers = { ContentType = new MediaTypeHeaderValue("application/octet-stream") } });
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"publish: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.GetProperty("release").GetProperty("id").GetString()!;
    }

    public async Task<JsonElement> GetJsonAsync(string path, HttpClient? client = null)
    {
        var response = await (client ?? Admin).GetAsync(path);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"GET {path}: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    public async Task<HttpResponseMessage> PostJsonAsync(string path, object body, HttpClient? client = null) =>
        await (client ?? Admin).PostAsJsonAsync(path, body);

    public async Task<AuditVerification> VerifyAuditAsync() =>
        JsonSerializer.Deserialize((await GetJsonAsync("/api/v1/audit/verify")).GetRawText(),
        OperatorJson.Default.AuditVerification)!;

    public async ValueTask DisposeAsync()
    {
        Admin.Dispose();
        await Server.DisposeAsync();
        Publisher.Dispose();
        if (Options.PostgresConnectionString is null) Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(Options.DataDirectory, true); } catch (IOException) { }
    }
}

/// <summary>Kernel builds and signed bundles for tests (any bytes serve as the module: the server never loads
/// modules).</summary>
public static class Kernels
{
    public static readonly KernelTarget Debian61 = new(KernelRelease.Parse("6.1.0-56-cloud-amd64"), "6.1.158-1",
        BuildId.Parse("3b43fad5a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6"));
    public static readonly KernelTarget Debian612 = new(KernelRelease.Parse("6.12.117+deb12-cloud-amd64"),
        "6.12.117-1~deb12u1", BuildId.Parse("9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"));

    public static byte[]
        Bundle(PublisherKey key, KernelTarget target, int level, params (string Cve, CveSeverity Severity)[] cves)
    {
        var fixes = cves.Length == 0
            ? new List<BundleFix> { new($"fix-{level}", [], $"fix at level {level}") }
            : [.. cves.Select((c, i) => new BundleFix($"fix-{c.Cve}",
                [new CveReference(CveId.Parse(c.Cve), c.Severity, new DateOnly(2025, 1, 10))], $"fixes {c.Cve}"))];
        var module = new byte[4096];
        Random.Shared.NextBytes(module);
        return Kintsugi.Bundles.Bundle.Create(module, new BundleDescription
        {
            Target = target,
            CumulativeLevel = level,
            Fixes = fixes,
            PatchedFunctions =
                [new PatchedFunction("vmlinux", $"function_{level}")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
            EffectivePackageVersion = null,
        }, key).ToArray();
    }
}
