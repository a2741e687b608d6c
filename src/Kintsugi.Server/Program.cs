using System.CommandLine;
using System.Text.Json;
using Kintsugi;
using Kintsugi.Server;
using Kintsugi.Server.Storage;

// kintsugi-server: the patch server's own executable (docs/server.md). `kintsugi server run` starts it;
// the other `kintsugi server` commands are HTTP clients of its API.
var dataOption = new Option<string>("--data")
{
    Description = "Data directory (SQLite database, bundle store, TLS certificate)",
    DefaultValueFactory = _ =>
Environment.GetEnvironmentVariable("KINTSUGI_SERVER_DATA") ?? "/var/lib/kintsugi/server"
};
var postgresOption = new Option<string?>("--postgres")
{
    Description = "PostgreSQL connection string (instead of SQLite); replicas may share one database. Also " +
    "KINTSUGI_SERVER_POSTGRES."
};

var listen = new Option<string[]>("--listen")
{
    Description = "URL to listen on, https:// or http:// (repeatable)",
    DefaultValueFactory = _ =>
["https://0.0.0.0:8443"],
    AllowMultipleArgumentsPerToken = false
};
var tlsCert = new Option<string?>("--tls-cert")
{ Description = "TLS certificate (PKCS#12, or PEM with --tls-key); default: self-signed, generated on first run" };
var tlsKey = new Option<string?>("--tls-key") { Description = "PEM private key for --tls-cert" };
var tlsName = new Option<string[]>("--tls-name")
{ Description = "Extra DNS name or IP address for the generated certificate (repeatable)" };
var checkIn = new Option<int>("--check-in-seconds")
{ Description = "Agent check-in interval", DefaultValueFactory = _ => 3600 };
var eventsWait = new Option<int>("--events-wait-seconds")
{
    Description = "Longest events long-poll; bounds how fast a revoke reaches agents",
    DefaultValueFactory = _ =>
30
};
var promotionInterval = new Option<double>("--promotion-interval-seconds")
{ Description = "How often delayed and health-gated promotions are evaluated", DefaultValueFactory = _ => 30 };
var epochPoll = new Option<int>("--epoch-poll-ms")
{ Description = "How often a replica reads the epoch other replicas move", DefaultValueFactory = _ => 500 };
var enrollRate = new Option<int>("--enrollments-per-minute")
{ Description = "Enrollments allowed per source address per minute", DefaultValueFactory = _ => 30 };
var trust = new Option<string?>("--trust")
{ Description = "Import the publisher keys of this trust-store directory at start" };
var timestampKey = new Option<string?>("--timestamp-key")
{
    Description = "The online timestamp key (PKCS#8 PEM) that extends release metadata's freshness; default " +
    "DATA/keys/timestamp.pem, made at first start; share one file between replicas"
};
var trustedProxy = new Option<string[]>("--trusted-proxy")
{
    Description = "A reverse proxy's address whose X-Forwarded-For/-Proto are believed (repeatable)",
    AllowMultipleArgumentsPerToken = false
};
var channels = new Option<string[]>("--channel")
{ Description = "Initial channels, in order, on an empty server (repeatable; default canary, production)" };

var run = new Command("run", "Run the patch server")
    { dataOption, postgresOption, listen, tlsCert, tlsKey, tlsName, checkIn, eventsWait, promotionInterval, epochPoll,
    enrollRate, trust, timestampKey, channels, trustedProxy };
run.SetAction(async (parse, cancellation) => await Guard(async () =>
{
    if (parse.GetValue(checkIn) is < 60
        or > 86_400) throw new ServerConfigurationException("--check-in-seconds must be between 60 and 86400");
    if (parse.GetValue(eventsWait) is < 1
        or > 300) throw new ServerConfigurationException("--events-wait-seconds must be between 1 and 300");
    var options = new ServerOptions
    {
        DataDirectory = Path.GetFullPath(parse.GetValue(dataOption)!),
        PostgresConnectionString = parse.GetValue(postgresOption)
            ?? Environment.GetEnvironmentVariable("KINTSUGI_SERVER_POSTGRES"),
        Urls = parse.GetValue(listen)!,
        TlsCertificate = parse.GetValue(tlsCert),
        TlsKey = parse.GetValue(tlsKey),
        TlsNames = parse.GetValue(tlsName) ?? [],
        CheckInSeconds = parse.GetValue(checkIn),
        EventsWaitSeconds = parse.GetValue(eventsWait),
        PromotionInterval = TimeSpan.FromSeconds(Math.Max(0.2, parse.GetValue(promotionInterval))),
        EpochPollInterval = TimeSpan.FromMilliseconds(Math.Clamp(parse.GetValue(epochPoll), 50, 10_000)),
        EnrollmentsPerMinute = Math.Max(1, parse.GetValue(enrollRate)),
        TrustDirectory = parse.GetValue(trust),
        TimestampKey = parse.GetValue(timestampKey) is { } key ? Path.GetFullPath(key) : null,
        InitialChannels = parse.GetValue(channels) is { Length: > 0 } c ? c : ["canary", "production"],
        TrustedProxies = [.. (parse.GetValue(trustedProxy) ?? []).Select(TrustedProxies.Parse)],
    };
    await using var server = await ServerApp.StartAsync(options, message =>
        Console.Error.WriteLine($"kintsugi-server: {message}"));
    foreach (var url in server.Urls) Console.Error.WriteLine($"kintsugi-server: listening on {url}");
    if (server.CertificateFingerprint is { } fp) Console.Error.WriteLine($"kintsugi-server: TLS certificate SHA-256 " +
        $"{fp}");
    Console.Error.WriteLine("kintsugi-server: ready");
    // Type=notify (kintsugi-server.service): ready once listening; the watchdog is pinged while it runs.
    var notify = SystemdNotify.FromEnvironment();
    notify.Ready($"listening on {string.Join(", ", server.Urls)}");
    using var stopping = new CancellationTokenSource();
    var watchdog = notify.RunWatchdogAsync(() => true, stopping.Token);
    await server.WaitForShutdownAsync();
    notify.Stopping();
    await stopping.CancelAsync();
    await watchdog;
    return 0;
}));

var json = new Option<bool>("--json") { Description = "Print machine-readable JSON" };
var expectHead = new Option<string?>("--expect-head")
{ Description = "Also require the chain to end at this head hash (noted earlier, kept elsewhere)" };
var verify = new Command("verify",
    "Verify the audit log's hash chain directly in the database (also with the server stopped)")
    { dataOption, postgresOption, json, expectHead };
verify.SetAction(async (parse, cancellation) => await Guard(async () =>
{
    var postgres = parse.GetValue(postgresOption) ?? Environment.GetEnvironmentVariable("KINTSUGI_SERVER_POSTGRES");
    var data = Path.GetFullPath(parse.GetValue(dataOption)!);
    if (postgres is null
        && !File.Exists(Path.Combine(data,
        "kintsugi.db"))) throw new ServerConfigurationException($"no server database in {data} (give --data or " +
        $"--postgres)");
    using var db = postgres is not null ? Database.OpenPostgres(postgres)
        : Database.OpenSqlite(Path.Combine(data, "kintsugi.db"));
    // The head this server kept outside the database (with --postgres: the replica whose --data is given).
    var witness = Path.Combine(data, ServerApp.AuditWitnessFile);
    if (File.Exists(witness)) db.Witness = new AuditWitness(witness);
    var result = await AuditChain.VerifyAsync(db, cancellation);
    var expected = parse.GetValue(expectHead);
    if (expected is not null && expected != result.HeadHash)
        result = result with
        {
            Intact = false,
            Problems = [.. result.Problems,
            new AuditProblem(result.HeadSeq,
            $"the head hash is {result.HeadHash}, not the expected {expected}: the log was rewritten")]
        };
    if (parse.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(result,
        OperatorJson.Default.AuditVerification));
    else
    {
        Console.WriteLine(result.Intact
            ? $"audit chain intact: {result.Events} events, head {result.HeadSeq} {result.HeadHash}"
            : $"audit chain BROKEN ({result.Problems.Count} problems):");
        foreach (var p in result.Problems) Console.WriteLine($"  event {p.Seq}: {p.Problem}");
    }
    return result.Intact ? 0 : (int)ExitCode.InputRefused;
}));

var root = new RootCommand("""
    kintsugi-server: the self-hosted Kintsugi patch server (docs/server.md).

    Exit codes: 0 success; 1 internal error; 2 usage; 3 audit chain broken (audit verify);
    5 environment (database, certificate, data directory).
    """)
{
    run,
    new Command("audit", "The audit log") { verify },
    new Command("version", "Print the version") { Action = new VersionAction() },
};
var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    foreach (var error in parsed.Errors) Console.Error.WriteLine($"kintsugi-server: {error.Message}");
    return (int)ExitCode.Usage;
}
return await parsed.InvokeAsync();

static async Task<int> Guard(Func<Task<int>> body)
{
    try { return await body(); }
    catch (KintsugiException e)
    {
        Console.Error.WriteLine($"kintsugi-server: error: {e.Message}");
        return (int)e.ExitCode;
    }
    catch (IOException e)
    {
        Console.Error.WriteLine($"kintsugi-server: error: {e.Message}");
        return (int)ExitCode.Environment;
    }
}

internal sealed class VersionAction : System.CommandLine.Invocation.SynchronousCommandLineAction
{
    public override int Invoke(ParseResult parseResult)
    {
        Console.WriteLine(ServerApp.Version);
        return 0;
    }
}
