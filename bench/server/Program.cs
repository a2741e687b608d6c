using System.Diagnostics;
using System.Formats.Tar;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Kintsugi;
using Kintsugi.Bundles;
using Kintsugi.Protocol;
using Kintsugi.Protocol.Operator;

// Usage: Kintsugi.Server.Bench [--backend sqlite|postgres] [--postgres CS] [--machines N] [--seconds S]
//                              [--concurrency C] [--https]
//        Kintsugi.Server.Bench --import-mib MIB [--backend ...]: peak server memory while importing (then
//                              exporting) MIB MiB
// Starts a real kintsugi-server process (Release build beside this program), enrolls N distinct machines on two
// kernel builds, then has them check in (steady state: each reports the level it was offered) as fast as C
// concurrent connections allow, and prints throughput and latency percentiles measured by the client.
var options = Args(args);
var backend = options.GetValueOrDefault("backend", "sqlite");
var machines = int.Parse(options.GetValueOrDefault("machines", "10000"));
var seconds = int.Parse(options.GetValueOrDefault("seconds", "20"));
var concurrency = int.Parse(options.GetValueOrDefault("concurrency", "64"));
var https = options.ContainsKey("https");
var postgres = backend == "postgres" ? options.GetValueOrDefault("postgres")
    ?? throw new ArgumentException("--postgres CONNECTION-STRING is required with --backend postgres") : null;

var data = Directory.CreateTempSubdirectory("kintsugi-bench-").FullName;
var port = FreePort();
var scheme = https ? "https" : "http";
var start = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "kintsugi-server.dll"), "run", "--data", data,
    "--listen", $"{scheme}://127.0.0.1:{port}", "--enrollments-per-minute", "1000000" }
    .Concat(postgres is null ? [] : ["--postgres", postgres]))
    start.ArgumentList.Add(a);
start.Environment["DOTNET_gcServer"] = "0";
using var server = Process.Start(start)!;
var ready = new TaskCompletionSource();
server.ErrorDataReceived += (_, e) =>
{
    if (e.Data?.EndsWith("ready") == true) ready.TrySetResult();
    else if (e.Data is { } l && l.Contains("fail")) Console.Error.WriteLine(l);
};
server.OutputDataReceived += (_, _) => { };
server.BeginErrorReadLine(); server.BeginOutputReadLine();
if (await Task.WhenAny(ready.Task, Task.Delay(60_000)) != ready.Task)
    throw new InvalidOperationException("the server did not start");
try
{
    var admin = (await File.ReadAllTextAsync(Path.Combine(data, "initial-admin-token"))).Trim();
    var handler = new SocketsHttpHandler
    {
        MaxConnectionsPerServer = concurrency,
        PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
        EnableMultipleHttp2Connections = true
    };
    // the bench talks to the certificate the server just generated
    handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
    using var http = new HttpClient(handler)
    {
        BaseAddress = new Uri($"{scheme}://127.0.0.1:{port}"),
        Timeout = TimeSpan.FromSeconds(30)
    };
    HttpRequestMessage Authorized(HttpMethod method, string path, string bearer, HttpContent? content = null)
    {
        var request = new HttpRequestMessage(method, path) { Content = content };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        return request;
    }

    // Two kernel builds, one release each, a trusted key, one enrollment token.
    using var key = PublisherKey.Generate();
    (await http.SendAsync(Authorized(HttpMethod.Post, "/api/v1/keys", admin,
        JsonContent.Create(new { pem = key.PublicKey.ExportPem() })))).EnsureSuccessStatusCode();
    if (options.TryGetValue("import-mib", out var importMib))
    {
        await ImportBenchmark(scheme, port, admin, key, int.Parse(importMib), server.Id, data);
        return 0;
    }
    KernelTarget[] kernels =
    [
        new(KernelRelease.Parse("6.1.0-56-cloud-amd64"), "6.1.158-1",
        BuildId.Parse("3b43fad5a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6")),
        new(KernelRelease.Parse("6.12.117+deb12-cloud-amd64"), "6.12.117-1~deb12u1",
        BuildId.Parse("9f8e7d6c5b4a39281706f5e4d3c2b1a098765432")),
    ];
    foreach (var kernel in kernels)
    {
        var bundle = Bundle.Create(RandomNumberGenerator.GetBytes(8192), new BundleDescription
        {
            Target = kernel,
            CumulativeLevel = 1,
            Fixes = [new BundleFix("CVE-2024-1086", [new CveReference(
                CveId.Parse("CVE-2024-1086"), CveSeverity.High, new DateOnly(2024, 1, 31))], "nf_tables")],
            PatchedFunctions = [new PatchedFunction("vmlinux", "nft_verdict_init")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "bench",
        }, key).ToArray();
        (await http.SendAsync(
            Authorized(HttpMethod.Post, "/api/v1/releases", admin,
            new ByteArrayContent(bundle)
            {
                Headers = { ContentType = new MediaTypeHeaderValue(
            "application/octet-stream") }
            }))).EnsureSuccessStatusCode();
    }
    var tokenResponse = await http.SendAsync(Authorized(HttpMethod.Post, "/api/v1/enrollment-tokens", admin,
        JsonContent.Create(new { channel = "canary" })));
    var token = (await tokenResponse.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;

    // Enroll every machine.
    var clock = Stopwatch.StartNew();
    var fleet = new (string Credential, KernelTarget Kernel, byte[] Body)[machines];
    await Parallel.ForAsync(0, machines, new ParallelOptions { MaxDegreeOfParallelism = concurrency }, async (i, _) =>
    {
        var kernel = kernels[i % 2];
        var enroll = new EnrollRequest(token, $"bench-{i:D5}", Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(
            16)), new KernelIdentity(kernel.Release, kernel.BuildId, kernel.PackageVersion), "0.1.0");
        using var response =
            await http.PostAsJsonAsync(ProtocolPaths.Enroll, enroll, ProtocolJson.Default.EnrollRequest);
        response.EnsureSuccessStatusCode();
        var enrolled = (await response.Content.ReadFromJsonAsync(ProtocolJson.Default.EnrollResponse))!;
        fleet[i] = (enrolled.Credential, kernel, []);
    });
    var enrollSeconds = clock.Elapsed.TotalSeconds;
    Console.WriteLine($"enrolled {machines} machines in {enrollSeconds:F1} s ({machines / enrollSeconds:F0}/s)");

    // First check-in: each machine learns its offer, then reports it applied (state changes are audited).
    await Parallel.ForAsync(0, machines, new ParallelOptions { MaxDegreeOfParallelism = concurrency }, async (i, _) =>
    {
        var (credential, kernel, _) = fleet[i];
        var identity = new KernelIdentity(kernel.Release, kernel.BuildId);
        var offer = await CheckIn(http, credential, JsonSerializer.SerializeToUtf8Bytes(new CheckInRequest(identity,
            PatchState.NothingToApply, null, null, null, 0, null, "0.1.0"), ProtocolJson.Default.CheckInRequest));
        var applied = JsonSerializer.SerializeToUtf8Bytes(new CheckInRequest(identity, PatchState.Applied,
            offer.Release!.Level, offer.Release.Bundle, null, 0, null, "0.1.0"), ProtocolJson.Default.CheckInRequest);
        var steady = await CheckIn(http, credential, applied);
        if (steady.Action != CheckInAction.None)
            throw new InvalidOperationException($"machine {i} was told {steady.Action} after applying");
        fleet[i] = (credential, kernel, applied);
    });

    // Measure: steady-state check-ins from all machines, round-robin, for the given time.
    var latencies = new List<double>[concurrency];
    var next = -1L;
    var stopAt = Stopwatch.GetTimestamp() + (long)(seconds * (double)Stopwatch.Frequency);
    var errors = 0;
    var cpuBefore = server.TotalProcessorTime;
    clock.Restart();
    await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async worker =>
    {
        var mine = latencies[worker] = new List<double>(200_000);
        while (Stopwatch.GetTimestamp() < stopAt)
        {
            var i = (int)(Interlocked.Increment(ref next) % machines);
            var started = Stopwatch.GetTimestamp();
            try { await CheckIn(http, fleet[i].Credential, fleet[i].Body); }
            catch (Exception) { Interlocked.Increment(ref errors); continue; }
            mine.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
    }));
    var elapsed = clock.Elapsed.TotalSeconds;
    server.Refresh();
    var serverCpu = (server.TotalProcessorTime - cpuBefore).TotalSeconds / elapsed;
    var all = latencies.SelectMany(l => l).Order().ToArray();
    double P(double q) => all[Math.Min(all.Length - 1, (int)Math.Ceiling(q * all.Length) - 1)];
    var distinct = Math.Min(machines, all.Length);
    Console.WriteLine($"backend={backend} transport={scheme} machines={machines} concurrency={concurrency} " +
        $"duration={elapsed:F1}s");
    Console.WriteLine(
        $"check-ins: {all.Length} ({distinct} distinct machines), {all.Length / elapsed:F0}/s, errors {errors}");
    Console.WriteLine($"latency ms: p50 {P(0.50):F2}  p90 {P(0.90):F2}  p99 {P(0.99):F2}  p99.9 {P(0.999):F2}  max " +
        $"{all[^1]:F2}");
    Console.WriteLine($"server CPU: {serverCpu:F2} cores on average (of {Environment.ProcessorCount}); the load " +
        $"generator shares the machine");
    return 0;
}
finally
{
    server.Kill(entireProcessTree: true);
    await server.WaitForExitAsync();
    try { Directory.Delete(data, true); } catch (IOException) { }
}

// Imports an export-format tar of at least MIB MiB (bundles of 52 MiB of random module bytes, each within a
// bundle's limit) and measures the server process's peak resident memory (VmHWM, reset just before through
// /proc/PID/clear_refs) while it takes it; then the same for streaming an export of everything back.
static async Task
    ImportBenchmark(string scheme, int port, string admin, PublisherKey key, int mib, int serverPid, string data)
{
    const int BundleMiB = 52;
    var count = (mib + BundleMiB - 1) / BundleMiB;
    var archive = Path.Combine(Path.GetTempPath(), $"kintsugi-bench-import-{Environment.ProcessId}.tar");
    try
    {
        var releases = new List<ExportedRelease>();
        await using (var file = File.Create(archive))
        await using (var tar = new TarWriter(file, TarEntryFormat.Pax, leaveOpen: false))
        {
            var module = new byte[BundleMiB * 1024 * 1024];
            var target = new KernelTarget(KernelRelease.Parse("6.1.0-56-cloud-amd64"), "6.1.158-1",
                BuildId.Parse("3b43fad5a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6"));
            for (var level = 1; level <= count; level++)
            {
                Random.Shared.NextBytes(module);
                var bundle = Bundle.Create(module, new BundleDescription
                {
                    Target = target,
                    CumulativeLevel = level,
                    Fixes = [new BundleFix($"fix-{level}", [], "big")],
                    PatchedFunctions = [new PatchedFunction("vmlinux", $"function_{level}")],
                    CreatedAt =
                    DateTimeOffset.UtcNow,
                    BuilderVersion = "bench",
                }, key).ToArray();
                var digest = Sha256Digest.Of(bundle).ToString();
                releases.Add(new ExportedRelease($"r_{level}", target.Release.Value, target.BuildId.ToString(), level,
                    digest, 0, ["canary"]));
                await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.RegularFile,
                    $"bundles/{digest}")
                { DataStream = new MemoryStream(bundle) });
            }
            var index =
                new ExportIndex(Kintsugi.Server.Api.TransferApi.Format, "bench", DateTimeOffset.UtcNow, releases);
            await tar.WriteEntryAsync(
                new PaxTarEntry(TarEntryType.RegularFile, Kintsugi.Server.Api.TransferApi.IndexName)
                {
                    DataStream = new MemoryStream(
                    JsonSerializer.SerializeToUtf8Bytes(index, OperatorJson.Default.ExportIndex))
                });
        }
        var size = new FileInfo(archive).Length;
        GC.Collect();

        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        using var http = new HttpClient(handler)
        {
            BaseAddress = new Uri($"{scheme}://127.0.0.1:{port}"),
            Timeout = TimeSpan.FromMinutes(30)
        };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", admin);

        var before = Memory(serverPid);
        await File.WriteAllTextAsync($"/proc/{serverPid}/clear_refs", "5"); // VmHWM := VmRSS now
        var clock = Stopwatch.StartNew();
        await using (var stream = File.OpenRead(archive))
        {
            using var content =
                new StreamContent(stream) { Headers = { ContentType = new MediaTypeHeaderValue("application/x-tar") } };
            using var response = await http.PostAsync("/api/v1/import", content);
            var body = await response.Content.ReadAsStringAsync();
            if (!response.IsSuccessStatusCode)
                throw new InvalidOperationException($"import: {(int)response.StatusCode} {body}");
            var imported = JsonDocument.Parse(body).RootElement.GetProperty("imported").GetInt32();
            if (imported != count)
                throw new InvalidOperationException($"import: {imported} of {count} bundles imported: {body}");
        }
        var importSeconds = clock.Elapsed.TotalSeconds;
        var afterImport = Memory(serverPid);

        await File.WriteAllTextAsync($"/proc/{serverPid}/clear_refs", "5");
        clock.Restart();
        long exported = 0;
        await using (var export = await http.GetStreamAsync("/api/v1/export"))
        {
            var buffer = new byte[81920];
            int read;
            while ((read = await export.ReadAsync(buffer)) > 0) exported += read;
        }
        var exportSeconds = clock.Elapsed.TotalSeconds;
        var afterExport = Memory(serverPid);

        var dataBytes =
            Directory.EnumerateFiles(data, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Console.WriteLine($"archive: {size / 1048576.0:F1} MiB, {count} bundles of {BundleMiB} MiB; server data " +
            $"directory after: {dataBytes / 1048576.0:F1} MiB");
        Console.WriteLine($"server before import: VmRSS {before.Rss / 1024.0:F1} MiB (peak since start " +
            $"{before.Hwm / 1024.0:F1} MiB)");
        Console.WriteLine($"import: {importSeconds:F1} s ({size / 1048576.0 / importSeconds:F1} MiB/s), server peak " +
            $"RSS {afterImport.Hwm / 1024.0:F1} MiB " +
                          $"(+{(afterImport.Hwm - before.Rss) / 1024.0:F1} MiB over its RSS before), RSS after " +
                          $"{afterImport.Rss / 1024.0:F1} MiB");
        Console.WriteLine($"export of the same: {exported / 1048576.0:F1} MiB in {exportSeconds:F1} s, server peak " +
            $"RSS {afterExport.Hwm / 1024.0:F1} MiB " +
                          $"(+{(afterExport.Hwm - afterImport.Rss) / 1024.0:F1} MiB over its RSS before)");
    }
    finally { File.Delete(archive); }
}

/// <summary>VmRSS and VmHWM (peak resident set) of a process, in KiB.</summary>
static (long Rss, long Hwm) Memory(int pid)
{
    long Field(string[] lines, string name) =>
        long.Parse(lines.Single(l => l.StartsWith(name + ":", StringComparison.Ordinal))[(name.Length + 1)..].Trim()
        .Split(' ')[0]);
    var status = File.ReadAllLines($"/proc/{pid}/status");
    return (Field(status, "VmRSS"), Field(status, "VmHWM"));
}

static async Task<CheckInResponse> CheckIn(HttpClient http, string credential, byte[] body)
{
    using var request = new HttpRequestMessage(HttpMethod.Post, ProtocolPaths.CheckIn)
    {
        Content = new ByteArrayContent(
        body)
        { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } }
    };
    request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", credential);
    using var response = await http.SendAsync(request);
    if (response.StatusCode != HttpStatusCode.OK) throw new InvalidOperationException($"check-in: " +
        $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    return (await response.Content.ReadFromJsonAsync(ProtocolJson.Default.CheckInResponse))!;
}

static int FreePort()
{
    using var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
    l.Start();
    return ((IPEndPoint)l.LocalEndpoint).Port;
}

static Dictionary<string, string> Args(string[] args)
{
    var result = new Dictionary<string, string>();
    for (var i = 0; i < args.Length; i++)
    {
        if (!args[i].StartsWith("--", StringComparison.Ordinal))
            throw new ArgumentException($"unexpected argument {args[i]}");
        var name = args[i][2..];
        result[name] =
            i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : "true";
    }
    return result;
}
