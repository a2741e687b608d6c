using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Lab;
using Kintsugi.Testing;
using static Kintsugi.Testing.GuestOutput;
using Xunit.Abstractions;

namespace Kintsugi.Server.Tests;

/// <summary>
/// The whole delivery path on real kernels: a real <c>kintsugi-server</c> on this host, the operator's real
/// <c>kintsugi server</c> commands, and the real agent inside a QEMU guest per kernel (Debian 12's 6.1 and
/// 6.12 cloud kernels, one after the other, one boot each). Each agent enrolls with a channel token, gets
/// the release for its exact build, applies it and reports; a revoke of level 2 sends it back to level 1,
/// and the audit chain records all of it.
/// </summary>
public sealed class FleetLabSpecification(ITestOutputHelper output) : IDisposable
{
    private const string LevelOneModule = "kintsugi_fixture_cmdline_a";
    private const string LevelTwoModule = "kintsugi_fixture_cmdline_b";
    private static readonly TimeSpan RevokeBound = TimeSpan.FromSeconds(30);

    private readonly TemporaryDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private sealed record Published(KernelUnderTest Kernel, string LevelOne, string LevelTwo,
        Sha256Digest LevelOneBundle, Sha256Digest LevelTwoBundle);

    [Fact]
    public async Task
        Agents_on_61_and_612_apply_their_kernels_release_go_back_to_level_1_seconds_after_a_revoke_audit_chain_holds()
    {
        KernelUnderTest[] kernels = [await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61),
            await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud612)];
        await using var server = await ServerProcess.StartAsync(extra: ["--check-in-seconds", "60"]);
        var ca = Path.Combine(server.DataDirectory, "tls", "server.crt");
        using var admin = Client(server, ca);
        using var signal = new GuestSignal();

        // The operator: trust the publisher, publish levels 1 and 2 for each exact kernel, make a canary token.
        using var publisher = PublisherKey.Generate();
        var publicKey = _dir["publisher.pub"];
        publisher.PublicKey.Save(publicKey);
        var privateKey = _dir["publisher.key"];
        publisher.Save(privateKey);
        var timestampKey = Path.Combine(server.DataDirectory, "keys", "timestamp.pub");
        Operator(server, ca, "trust", "add", publicKey);
        var bundles = new List<string>();
        foreach (var kernel in kernels)
            foreach (var (level, module) in new[] { (1, LevelOneModule), (2, LevelTwoModule) })
            {
                var bundle = Bundle.Create(File.ReadAllBytes(kernel.Modules[module]), Description(kernel, level),
                    publisher).ToArray();
                bundles.Add(Write($"{kernel.Release}-level-{level}.kbundle", bundle));
            }
        using var releases = JsonDocument.Parse(Operator(server, ca, ["publish", "--json", .. bundles]));
        var ids = releases.RootElement.EnumerateArray()
            .Select(r => r.GetProperty("release").GetProperty("id").GetString()!).ToList();
        var published = kernels.Select((k, i) => new Published(k, ids[2 * i], ids[2 * i + 1],
            Sha256Digest.Of(File.ReadAllBytes(bundles[2 * i])),
            Sha256Digest.Of(File.ReadAllBytes(bundles[2 * i + 1])))).ToList();
        var token = Operator(server, ca, "tokens", "enroll", "--channel", "canary", "--max-uses", "2").Trim();
        Assert.StartsWith("ket_", token);

        var latencies = new List<(KernelRelease Kernel, TimeSpan Latency)>();
        foreach (var (release, index) in published.Select((p, i) => (p, i)))
        {
            var kernel = release.Kernel;
            var name = $"vm{index}";
            var config = Write($"{name}.conf", Encoding.UTF8.GetBytes($"""
                # a lab machine's agent: the host's patch server, pinned by its certificate
                server = https://10.0.2.2:{server.Port}/
                server-ca = /etc/kintsugi/server.crt
                token = {token}
                trust = /etc/kintsugi/trust
                settle = 1
                """ + "\n"));
            var vm = kernel.RunAsync($"""
                hostname fleet-{name}
                mkdir -p /etc/kintsugi
                kintsugi keys trust /inputs/publisher.pub --trust /etc/kintsugi/trust > /dev/null || exit 10
                kintsugi keys trust --timestamp /inputs/timestamp.pub --trust /etc/kintsugi/trust > /dev/null || exit 11
                cp /inputs/agent.conf /inputs/server.crt /etc/kintsugi/
                kintsugi agent run > /run/agent.log 2>&1 &
                agent=$!
                tries=0
                until [ "$(wget -q -O - http://10.0.2.2:{signal.Port}/{name} 2>/dev/null)" = stop ]; do
                  tries=$((tries + 1)); if [ $tries -gt 900 ]; then echo "@gave-up"; break; fi
                  sleep 1
                done
                kill $agent; wait $agent; echo "@agent-exit=$?"
                echo @agent; cat /run/agent.log
                echo @livepatches; ls /sys/kernel/livepatch
                echo @cmdline; cat /proc/cmdline
                echo @status; kintsugi status --json
                echo @end
                """, [new GuestFile(publicKey, "/inputs/publisher.pub"), new GuestFile(config, "/inputs/agent.conf"),
                    new GuestFile(ca, "/inputs/server.crt"),
                    new GuestFile(timestampKey, "/inputs/timestamp.pub")],
                timeoutSeconds: 1200);

            Exception? failure = null;
            try
            {
                // Enrolled with the canary token, the agent gets level 2 for its exact build, applies it and says so.
                var applied = await WaitForMachineAsync(admin, vm, m => Is(m, kernel, "applied", 2),
                    TimeSpan.FromMinutes(10), $"{kernel.Release} reports level 2 applied");
                Assert.Equal(release.LevelTwoBundle.ToString(), applied.GetProperty("bundle").GetString());
                Assert.Equal(kernel.Kernel.Target.BuildId.ToString(), applied.GetProperty("buildId").GetString());
                Assert.Equal("canary", applied.GetProperty("channel").GetString());
                Assert.Equal($"fleet-{name}", applied.GetProperty("hostname").GetString());

                // Revoke level 2 with the publisher's signed release metadata (the agent goes down a level only on
                // that): the agent, holding the events long-poll, returns to level 1 and reports it.
                var metadata = _dir[$"{kernel.Release}.metadata.json"];
                var (signed, signing) = Run(Repository.KintsugiBinary,
                    ["bundle", "metadata", "--key", privateKey, "--release", kernel.Release.Value,
                    "--build-id", kernel.Kernel.Target.BuildId.ToString(), "--metadata-version", "1", "--current", "2",
                    "--revoke", "2", "--expires", "7d", "-o", metadata]);
                Assert.True(signed == 0, signing);
                await Task.Delay(TimeSpan.FromSeconds(2)); // the agent is back in its long-poll
                var clock = Stopwatch.StartNew();
                Operator(server, ca, "metadata", "publish", metadata);
                var back = await WaitForMachineAsync(admin, vm, m => Is(m, kernel, "applied", 1),
                    TimeSpan.FromMinutes(5), $"{kernel.Release} reports level 1 applied after the revoke");
                var observed = clock.Elapsed;
                Assert.Equal(release.LevelOneBundle.ToString(), back.GetProperty("bundle").GetString());
                var latency = await RevokeLatencyAsync(admin, release.LevelTwo, back.GetProperty("id").GetString()!);
                latencies.Add((kernel.Release, latency));
                output.WriteLine($"{kernel.Release}: revoke of level 2 to level 1 applied and reported: " +
                    $"{latency.TotalSeconds:0.00} s (server clock; {observed.TotalSeconds:0.0} s as seen by polling " +
                    $"the inventory)");
            }
            catch (Exception e) { failure = e; }
            finally { signal.Stop(name); }

            // The guest stops its agent and reports once told (also after a failure here, for the diagnosis).
            var result = await vm;
            var context =
                $"{kernel.Release}: {result.Describe()}\n--- output\n{result.Output}\n--- console\n{result.Console}";
            if (failure is not null) Assert.Fail($"{failure}\n--- the guest\n{context}\n--- the server\n{server.Log}");
            Assert.True(result.ExitCode == 0, context);
            Assert.DoesNotContain("@gave-up", result.Output);
            var agentLog = Section(result.Output, "agent");
            output.WriteLine($"--- {kernel.Release}: the guest's agent log\n{agentLog}");
            Assert.True(agentLog.Contains("enrolled as m_") && agentLog.Contains($"applying level 2 ({LevelTwoModule})")
                && agentLog.Contains($"applying level 1 ({LevelOneModule})"), context);
            Assert.True(Section(result.Output, "livepatches") == LevelOneModule, context);
            Assert.True(Section(result.Output, "cmdline") == "kintsugi-fixture-a: live patched", context);
            using var status = JsonDocument.Parse(Section(result.Output, "status"));
            Assert.Equal("applied", status.RootElement.GetProperty("state").GetString());
            Assert.Equal(1, status.RootElement.GetProperty("level").GetInt32());
            Assert.Equal(release.LevelOneBundle.ToString(), status.RootElement.GetProperty("bundle").GetString());
        }

        foreach (var (kernel, latency) in latencies)
            Assert.True(latency < RevokeBound, $"{kernel}: the revoke took {latency.TotalSeconds:0.0} s to be " +
                $"applied and reported (bound {RevokeBound.TotalSeconds} s)");

        // The audit chain verifies, read directly from the database by kintsugi-server, and tells the story.
        var verify = Run(ServerProcess.Binary, "audit", "verify", "--data", server.DataDirectory);
        Assert.True(verify.Code == 0, verify.Output);
        Assert.Contains("audit chain intact", verify.Output);
        var audit = await AuditAsync(admin);
        Assert.Equal(2, audit.Count(e => e.Action == "machine.enroll"));
        Assert.Equal(4, audit.Count(e => e.Action == "release.publish"));
        Assert.Equal(new[] { published[0].LevelTwo, published[1].LevelTwo },
            audit.Where(e => e.Action == "release.revoke").Select(e => e.Subject["release:".Length..]));
        foreach (var kernel in kernels)
        {
            var build = kernel.Kernel.Target.BuildId.ToString();
            var reports =
                audit.Where(e => e.Action == "machine.state" && e.Detail.GetProperty("buildId").GetString() == build)
                .Select(e => (To: e.Detail.GetProperty("to").GetString(),
                Level: e.Detail.GetProperty("level").GetString())).ToList();
            Assert.Contains(("applied", "2"), reports);
            Assert.Contains(("applied", "1"), reports);
            Assert.True(reports.IndexOf(("applied", "2")) < reports.IndexOf(("applied", "1")),
                string.Join(", ", reports));
        }
    }

    private static BundleDescription Description(KernelUnderTest kernel, int level) => new()
    {
        Target = kernel.Kernel.Target,
        CumulativeLevel = level,
        Fixes = [.. new[] { ("CVE-2024-1086", "netfilter: nf_tables: reject QUEUE/DROP verdict parameters"),
        ("CVE-2023-0179", "netfilter: nft_payload: incorrect arithmetics when fetching VLAN header bits") }
            .Take(level)
            .Select(f => new BundleFix(f.Item1,
            [new CveReference(CveId.Parse(f.Item1), CveSeverity.High, new DateOnly(2024, 1, 31))], f.Item2))],
        PatchedFunctions = [new PatchedFunction("vmlinux", "cmdline_proc_show")],
        CreatedAt = DateTimeOffset.UtcNow,
        BuilderVersion = "0.1.0",
    };

    private static bool Is(JsonElement machine, KernelUnderTest kernel, string state, int level) =>
        machine.GetProperty("kernelRelease").GetString() == kernel.Release.Value
        && machine.GetProperty("state").GetString() == state
        && machine.GetProperty("level") is { ValueKind: JsonValueKind.Number } l && l.GetInt32() == level;

    /// <summary>From the revoke to the machine's report of level 1 applied, both on the server's clock (its audit
    /// log).</summary>
    private static async Task<TimeSpan> RevokeLatencyAsync(HttpClient admin, string release, string machine)
    {
        var audit = await AuditAsync(admin);
        var revoked = audit.Single(e => e.Action == "release.revoke" && e.Subject == $"release:{release}").At;
        var reported =
            audit.First(e => e.Action == "machine.state" && e.Subject == $"machine:{machine}" && e.At >= revoked
            && e.Detail.GetProperty("to").GetString() == "applied"
            && e.Detail.GetProperty("level").GetString() == "1").At;
        return reported - revoked;
    }

    private sealed record AuditEntry(DateTimeOffset At, string Action, string Subject, JsonElement Detail);

    private static async Task<List<AuditEntry>> AuditAsync(HttpClient admin)
    {
        var events = await admin.GetFromJsonAsync<JsonElement>("/api/v1/audit?limit=10000");
        return [.. events.EnumerateArray().Select(e => new AuditEntry(e.GetProperty("at").GetDateTimeOffset(),
            e.GetProperty("action").GetString()!, e.GetProperty("subject").GetString()!,
            JsonDocument.Parse(e.GetProperty("detail").GetString()!).RootElement.Clone()))];
    }

    private async Task<JsonElement> WaitForMachineAsync(HttpClient admin, Task<LabRunResult> vm, Func<JsonElement,
        bool> condition, TimeSpan timeout, string what)
    {
        var clock = Stopwatch.StartNew();
        var last = "";
        while (clock.Elapsed < timeout)
        {
            var machines = await admin.GetFromJsonAsync<JsonElement>("/api/v1/machines");
            last = machines.ToString();
            if (machines.EnumerateArray().FirstOrDefault(condition) is { ValueKind: JsonValueKind.Object } machine)
                return machine.Clone();
            if (vm.IsCompleted)
            {
                var result = await vm;
                Assert.Fail($"the guest finished before {what}: {result.Describe()}\n--- inventory\n{last}\n--- " +
                    $"output\n{result.Output}\n--- console\n{result.Console}");
            }
            await Task.Delay(100);
        }
        output.WriteLine($"inventory: {last}");
        throw new TimeoutException($"{what}: not within {timeout}; inventory: {last}");
    }

    private string Write(string name, byte[] bytes)
    {
        var path = _dir[name];
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>The operator's command, the published <c>kintsugi server ...</c>, with the admin token; fails the test
    /// on a non-zero exit.</summary>
    private static string Operator(ServerProcess server, string ca, params string[] args)
    {
        var (code, text) = Run(Repository.KintsugiBinary,
            ["server", "--url", server.Url, "--ca", ca, "--token", server.AdminToken, .. args]);
        Assert.True(code == 0, $"kintsugi server {string.Join(' ', args)}: exit {code}\n{text}");
        return text;
    }

    private static (int Code, string Output) Run(string file, params string[] args)
    {
        var result = ExternalCommand.Run(file, args);
        return (result.ExitCode, result.StandardOutput + result.StandardError);
    }

    private static HttpClient Client(ServerProcess server, string ca)
    {
        var pinned = X509CertificateLoader.LoadCertificateFromFile(ca);
        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, _) =>
            certificate is not null && certificate.GetCertHashString() == pinned.GetCertHashString();
        var client = new HttpClient(handler) { BaseAddress = new Uri(server.Url), Timeout = TimeSpan.FromSeconds(60) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.AdminToken);
        return client;
    }
}

/// <summary>Tells a lab guest when to finish: it polls http://10.0.2.2:PORT/NAME (busybox wget) until the answer is
/// "stop".</summary>
internal sealed class GuestSignal : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly ConcurrentDictionary<string, bool> _stopped = new();

    public int Port { get; }

    public GuestSignal()
    {
        Port = Ports.Free();
        _listener.Prefixes.Add($"http://*:{Port}/");
        _listener.Start();
        _ = Task.Run(LoopAsync);
    }

    public void Stop(string name) => _stopped[name] = true;

    private async Task LoopAsync()
    {
        while (true)
        {
            HttpListenerContext context;
            try { context = await _listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException
                or InvalidOperationException)
            { return; }
            var body = Encoding.ASCII.GetBytes(_stopped.ContainsKey(context.Request.Url!.AbsolutePath.Trim('/'))
                ? "stop" : "wait");
            context.Response.ContentLength64 = body.Length;
            await context.Response.OutputStream.WriteAsync(body);
            context.Response.Close();
        }
    }

    public void Dispose() => _listener.Close();
}
