using System.Diagnostics;
using System.Net;
using System.Threading.RateLimiting;
using Kintsugi.Server.Api;
using Kintsugi.Server.Fleet;
using Kintsugi.Server.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Kintsugi.Server;

/// <summary>A started server: where it listens and, on first start, the initial admin token.</summary>
public sealed class RunningServer(WebApplication app, IReadOnlyList<string> urls, string? initialAdminToken,
    string? certificateFingerprint) : IAsyncDisposable
{
    public WebApplication App { get; } = app;
    public IReadOnlyList<string> Urls { get; } = urls;
    public string? InitialAdminToken { get; } = initialAdminToken;
    public string? CertificateFingerprint { get; } = certificateFingerprint;
    public IServiceProvider Services => App.Services;

    public Task WaitForShutdownAsync() => App.WaitForShutdownAsync();

    public async ValueTask DisposeAsync()
    {
        await App.StopAsync();
        await App.DisposeAsync();
    }
}

/// <summary>Builds and starts the patch server: storage, migrations, background services, the API and the
/// dashboard.</summary>
public static class ServerApp
{
    public static string Version => typeof(ServerApp).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    public const string AdminTokenFile = "initial-admin-token";

    /// <summary>The audit chain's head as this server wrote it, kept outside the database (<see
    /// cref="AuditWitness"/>).</summary>
    public const string AuditWitnessFile = "audit-head";

    public static async Task<RunningServer> StartAsync(ServerOptions options, Action<string>? report = null,
        Action<ILoggingBuilder>? logging = null)
    {
        report ??= _ => { };
        // The database, the TLS key, the timestamp key and the first admin token live here: the owner's only.
        OwnerOnly.CreateDirectory(options.DataDirectory);
        Dapper.DefaultTypeMap.MatchNamesWithUnderscores = true;

        var database = options.PostgresConnectionString is { } cs ? Database.OpenPostgres(cs)
            : Database.OpenSqlite(options.DatabasePath);
        var applied = await Migrations.ApplyAsync(database);
        if (applied.Count > 0) report($"{database.Description}: applied schema migrations " +
            $"{string.Join(", ", applied)}");
        database.Witness = new AuditWitness(Path.Combine(options.DataDirectory, AuditWitnessFile));
        if (await AuditChain.CheckWitnessAsync(database) is { } contradiction)
            report($"WARNING: the audit log contradicts the head this server kept outside the database: " +
                $"{contradiction}. " +
                "Run `kintsugi server audit verify`; after restoring a backup on purpose, move that file away");

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = "kintsugi-server",
            ContentRootPath = options.DataDirectory
        });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o =>
            { o.SingleLine = true; o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ "; o.UseUtcTimestamp = true; });
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
        logging?.Invoke(builder.Logging);

        var certificate = options.Urls.Any(u => u.StartsWith("https:", StringComparison.OrdinalIgnoreCase))
            ? Tls.Load(options, report) : null;
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = Kintsugi.Bundles.Bundle.MaxLength + 1024;
            kestrel.Limits.MaxConcurrentConnections = 100_000;
            foreach (var url in options.Urls)
            {
                var uri = new Uri(url);
                var address = uri.Host is "0.0.0.0" or "*" or "+" ? IPAddress.Any : uri.Host == "[::]"
                    ? IPAddress.IPv6Any : uri.Host == "localhost" ? IPAddress.Loopback
                    : IPAddress.Parse(uri.Host.Trim('[', ']'));
                kestrel.Listen(address, uri.Port, listen =>
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    if (uri.Scheme == "https") listen.UseHttps(certificate!);
                });
            }
        });

        var services = builder.Services;
        services.AddSingleton(options);
        services.AddSingleton(database);
        services.AddSingleton(new BundleStore(options.BundleDirectory, database));
        services.AddSingleton<ServerMetrics>();
        services.AddSingleton<Epoch>();
        services.AddHostedService(sp => sp.GetRequiredService<Epoch>());
        services.AddSingleton<CheckInWriter>();
        services.AddHostedService(sp => sp.GetRequiredService<CheckInWriter>());
        var timestamps = new ReleaseTimestamps(options);
        report($"timestamp key {timestamps.PublicKey.Id}: {options.TimestampKeyPath} (agents trust its .pub as a " +
            $"timestamp key)");
        services.AddSingleton(timestamps);
        services.AddSingleton<Releases>();
        services.AddSingleton<Machines>();
        services.AddSingleton<ApiTokens>();
        services.AddSingleton<Reports>();
        services.AddSingleton(new Apt.AptRepository(options.DataDirectory));
        services.AddHostedService<Promoter>();
        services.AddRouting();
        services.ConfigureHttpJsonOptions(json => Http.ConfigureJson(json.SerializerOptions));
        ApiDocument.Add(services);
        services.AddRateLimiter(limiter =>
        {
            limiter.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            limiter.AddPolicy(AgentApi.EnrollmentRateLimit, context => RateLimitPartition.GetFixedWindowLimiter(
                context.Connection.RemoteIpAddress?.ToString() ?? "unknown",
                _ => new FixedWindowRateLimiterOptions
                {
                    PermitLimit = options.EnrollmentsPerMinute,
                    Window = TimeSpan.FromMinutes(1),
                    QueueLimit = 0
                }));
            limiter.OnRejected = async (rejection, cancellation) =>
            {
                var retry = rejection.Lease.TryGetMetadata(MetadataName.RetryAfter, out var after)
                    ? (int)Math.Ceiling(after.TotalSeconds) : 60;
                rejection.HttpContext.Response.Headers.RetryAfter =
                    retry.ToString(System.Globalization.CultureInfo.InvariantCulture);
                rejection.HttpContext.RequestServices.GetRequiredService<ServerMetrics>()
                    .EnrollmentsRateLimited.Increment();
                await Http.WriteProblemAsync(rejection.HttpContext, 429, "too many enrollments",
                    $"at most {options.EnrollmentsPerMinute} enrollments per minute from one address; retry after " +
                    $"{retry} s");
            };
        });

        var app = builder.Build();
        // First: everything after it (metrics, rate limits, audit) sees the client behind a trusted proxy.
        if (options.TrustedProxies.Count > 0) app.UseForwardedHeaders(TrustedProxies.Options(options.TrustedProxies));
        app.Use(async (context, next) =>
        {
            var started = Stopwatch.GetTimestamp();
            try { await next(context); }
            catch (ApiProblem problem)
            {
                await Http.WriteProblemAsync(context, problem.Status, problem.Title, problem.Message);
            }
            catch (FleetException refusal)
            {
                var (status, title) = Http.Problem(refusal.Refusal);
                await Http.WriteProblemAsync(context, status, title, refusal.Message);
            }
            catch (StorageException e)
            {
                app.Logger.LogError(e, "storage failure on {Path}", context.Request.Path);
                await Http.WriteProblemAsync(context, 503, "storage unavailable", e.Message);
            }
            catch (Microsoft.AspNetCore.Http.BadHttpRequestException e)
            {
                await Http.WriteProblemAsync(context, e.StatusCode, "bad request", e.Message);
            }
            catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested) { }
            finally
            {
                var route = (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
                context.RequestServices.GetRequiredService<ServerMetrics>()
                    .ObserveRequest(context.Request.Method, route, context.Response.StatusCode,
                    Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
        });
        app.UseRouting();
        app.UseRateLimiter();
        AgentApi.Map(app);
        OperatorApi.Map(app);
        ReportsApi.Map(app);
        OpenVexApi.Map(app);
        AptApi.Map(app);
        TransferApi.Map(app);
        Web.Dashboard.Map(app);
        app.MapOpenApi(ApiDocument.Path);
        app.MapGet("/healthz", async (HttpContext context, Database db) =>
        {
            await using var connection = await db.OpenAsync(context.RequestAborted);
            await connection.ScalarAsync(null, "SELECT 1");
            await context.Response.WriteAsync("ok\n");
        });
        app.MapFallback(context =>
            Http.WriteProblemAsync(context, 404, "not found",
            $"no such endpoint: {context.Request.Method} {context.Request.Path}"));

        // Everything a fresh server needs, before it serves.
        var releases = app.Services.GetRequiredService<Releases>();
        await releases.EnsureChannelsAsync(options.InitialChannels);
        if (options.TrustDirectory is { } trust) await releases.ImportTrustStoreAsync(trust);
        var adminToken = await app.Services.GetRequiredService<ApiTokens>().BootstrapAsync();
        if (adminToken is not null)
        {
            var path = Path.Combine(options.DataDirectory, AdminTokenFile);
            OwnerOnly.WriteText(path, adminToken + "\n");
            report($"created the first admin API token in {path} (mode 0600); make per-person tokens with `kintsugi " +
                $"server tokens create` and delete that file");
        }
        await app.Services.GetRequiredService<Epoch>().InitializeAsync(CancellationToken.None);

        await app.StartAsync();
        var urls = app.Services.GetRequiredService<IServer>()
            .Features.Get<IServerAddressesFeature>()?.Addresses.ToList() ?? [];
        return new RunningServer(app, urls, adminToken, certificate is null ? null : Tls.Fingerprint(certificate));
    }
}

/// <summary>Evaluates delayed and health-gated promotions periodically.</summary>
public sealed class Promoter(Releases releases, ServerOptions options, ILogger<Promoter> log) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.PromotionInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                foreach (var (release, channel) in await releases.PromoteDueAsync(DateTimeOffset.UtcNow))
                    log.LogInformation("promoted {Release} to {Channel}", release, channel);
            }
            catch (Exception e) when (e is StorageException or System.Data.Common.DbException)
            {
                log.LogWarning("promotion pass failed: {Message}", e.Message);
            }
        }
    }
}
