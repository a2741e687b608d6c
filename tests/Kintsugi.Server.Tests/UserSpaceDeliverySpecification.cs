using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Kintsugi.Agent;
using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;
using Kintsugi.User;
using Kintsugi.User.Build;

namespace Kintsugi.Server.Tests;

/// <summary>
/// User-space patches delivered end to end on this host: a user-space bundle (a real patch for a real program built with
/// gcc) published on the real server, the real agent applying it to every running process that maps the program, a
/// process started later patched by the agent's next pass, the reports counting the CVE, and revoke reverting it.
/// </summary>
public sealed class UserSpaceDeliverySpecification : IDisposable
{
    private const string Cve = "CVE-2099-41001";
    private readonly string _dir = Directory.CreateTempSubdirectory("kintsugi-user-delivery-").FullName;
    private readonly List<string> _log = [];
    private readonly List<int> _processes = [];

    public void Dispose()
    {
        foreach (var pid in _processes)
            try { Process.GetProcessById(pid).Kill(); } catch (ArgumentException) { } catch (InvalidOperationException) { }
        Directory.Delete(_dir, recursive: true);
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    private MachinePaths Paths => new(PathOf("state"), PathOf("etc"), PathOf("run"), PathOf("systemd"));

    private MachineAgent Agent(TestServer server, string token) =>
        new(new AgentConfig
        {
            Server = server.BaseAddress,
            EnrollmentToken = token,
            ServerCertificate = Path.Combine(server.Options.DataDirectory, "tls", "server.crt"),
            TrustStore = PathOf("trust"),
            Settle = TimeSpan.Zero,
        }, Paths, line => { lock (_log) _log.Add(line); });

    private void Gcc(params string[] arguments)
    {
        using var gcc = Process.Start(new ProcessStartInfo("gcc", arguments) { RedirectStandardError = true })!;
        var errors = gcc.StandardError.ReadToEnd();
        gcc.WaitForExit();
        Assert.True(gcc.ExitCode == 0, errors);
    }

    /// <summary>The loop program as shipped, and its compute() fix linked into a user-space patch file.</summary>
    private (string Program, UserPatch Patch, byte[] PatchBytes) ProgramAndPatch()
    {
        var source = Path.Combine(AppContext.BaseDirectory, "Programs", "loop.c");
        var program = PathOf("loop");
        Gcc("-O2", "-g", "-pthread", source, "-o", program);
        Gcc("-O2", "-g", "-pthread", "-DFIXED", "-ffunction-sections", "-fdata-sections", "-c", source, "-o", PathOf("loop-fixed.o"));
        var patch = PatchLinker.Link(program, PathOf("loop-fixed.o"), ["compute"], "loop-compute-fix");
        patch.Save(PathOf("loop.patch"));
        return (program, patch, File.ReadAllBytes(PathOf("loop.patch")));
    }

    private static byte[] UserBundle(PublisherKey key, UserPatch patch, byte[] patchBytes, int level) =>
        Bundle.Create(patchBytes, new BundleDescription
        {
            Object = new ObjectTarget(patch.Target.Object, patch.Target.BuildId, "loop-tools", "1.0-1"),
            CumulativeLevel = level,
            Fixes = [new BundleFix("loop-compute", [new CveReference(CveId.Parse(Cve), CveSeverity.High, new DateOnly(2099, 1, 2))], "compute() returns the fixed value")],
            PatchedFunctions = [new Kintsugi.Bundles.PatchedFunction(patch.Target.Object, "compute")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        }, key).ToArray();

    /// <summary>Starts the program detached (a shell that exits at once), so the test runtime never reaps its ptrace stops.</summary>
    private int Start(string program)
    {
        var log = PathOf($"out-{_processes.Count}");
        using var shell = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", $"exec {program} 4 >{log} 2>&1 & echo $!"]) { RedirectStandardOutput = true })!;
        var pid = int.Parse(shell.StandardOutput.ReadToEnd().Trim());
        shell.WaitForExit();
        _processes.Add(pid);
        var clock = Stopwatch.StartNew();
        while (!(File.Exists(log) && File.ReadAllText(log).Contains("ready")))
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"{program} did not start");
            Thread.Sleep(10);
        }
        return pid;
    }

    private static long Global(int pid, string program, string symbol)
    {
        using var memory = new ProcessMemory(pid);
        var image = ElfImage.Load(program);
        var loaded = LoadedObject.Find(ProcessMaps.Read(pid), memory).Single(o => o.BuildId == image.BuildId);
        return BinaryPrimitives.ReadInt64LittleEndian(memory.Read(loaded.LoadBase + image.Symbols(dynamic: false).Single(s => s.Name == symbol).Value, 8));
    }

    /// <summary>Whether the process runs only <paramref name="counter"/>'s code now: that counter grows, the other does not.</summary>
    private static void RunsOnly(int pid, string program, string counter)
    {
        var other = counter == "new_calls" ? "old_calls" : "new_calls";
        var start = Global(pid, program, counter);
        var clock = Stopwatch.StartNew();
        while (Global(pid, program, counter) < start + 1000)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"process {pid}: {counter} does not grow");
            Thread.Sleep(10);
        }
        var frozen = Global(pid, program, other);
        Thread.Sleep(50);
        Assert.Equal(frozen, Global(pid, program, other));
    }

    private static JsonElement CveRow(JsonElement exposure) =>
        exposure.GetProperty("cves").EnumerateArray().Single(c => c.GetProperty("cve").GetString() == Cve);

    [Fact]
    public async Task A_published_user_space_patch_reaches_every_process_mapping_the_object_counts_in_the_reports_and_a_revoke_takes_it_out()
    {
        var (program, patch, patchBytes) = ProgramAndPatch();
        await using var server = await TestServer.StartAsync();
        using var stranger = PublisherKey.Generate();
        TrustStore.Open(PathOf("trust")).Add(stranger.PublicKey);
        var token = await server.EnrollmentTokenAsync();
        var first = Start(program);
        var agent = Agent(server, token);
        var release = await server.PublishAsync(UserBundle(server.Publisher, patch, patchBytes, level: 1));

        // The machine does not trust the publisher yet: it refuses the bundle, and the server counts it exposed.
        await agent.RunOnceAsync(default);
        RunsOnly(first, program, "old_calls");
        var exposed = Assert.Single(CveRow(await server.GetJsonAsync("/api/v1/reports/exposure")).GetProperty("machines").EnumerateArray());
        Assert.Equal(("loop", patch.Target.BuildId.ToString()), (exposed.GetProperty("object").GetString(), exposed.GetProperty("buildId").GetString()));
        lock (_log) Assert.Contains(_log, l => l.Contains("refused") && l.Contains("not in trust store"));

        TrustStore.Open(PathOf("trust")).Add(server.Publisher.PublicKey);
        await agent.RunOnceAsync(default);

        RunsOnly(first, program, "new_calls");
        var row = CveRow(await server.GetJsonAsync("/api/v1/reports/exposure"));
        Assert.Equal((0, 1), (row.GetProperty("exposed").GetInt32(), row.GetProperty("fixed").GetInt32()));
        var compliance = Assert.Single((await server.GetJsonAsync("/api/v1/reports/compliance")).GetProperty("items").EnumerateArray(),
            r => r.GetProperty("cve").GetString() == Cve);
        Assert.Equal(("compliant", "loop", patch.Target.BuildId.ToString()),
            (compliance.GetProperty("status").GetString(), compliance.GetProperty("object").GetString(), compliance.GetProperty("buildId").GetString()));

        // A process started after the check: the agent's next user-space pass (every user-scan-interval) patches it.
        var later = Start(program);
        RunsOnly(later, program, "old_calls");
        var pass = Assert.Single(agent.UserPass());
        Assert.Equal((PatchState.Applied, 2), (pass.State, pass.Patched));
        RunsOnly(later, program, "new_calls");

        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync($"/api/v1/releases/{release}/revoke", new RevokeRequest("bad fix"))).StatusCode);
        await agent.RunOnceAsync(default);

        RunsOnly(first, program, "old_calls");
        RunsOnly(later, program, "old_calls");
        Assert.Empty(UserPatcher.List(first));
        // No good release fixes the CVE for this build any more: the machine is no longer judged on it, and it shows the revert.
        row = CveRow(await server.GetJsonAsync("/api/v1/reports/exposure"));
        Assert.Equal((0, 0), (row.GetProperty("exposed").GetInt32(), row.GetProperty("fixed").GetInt32()));
        var machineId = Assert.Single((await server.GetJsonAsync("/api/v1/machines")).EnumerateArray()).GetProperty("id").GetString();
        var loop = Assert.Single((await server.GetJsonAsync($"/api/v1/machines/{machineId}")).GetProperty("userObjects").EnumerateArray());
        Assert.Equal(("loop", "revoked", 2), (loop.GetProperty("object").GetString(), loop.GetProperty("state").GetString(), loop.GetProperty("processes").GetInt32()));
        var audit = (await server.GetJsonAsync("/api/v1/audit")).EnumerateArray().Select(e => e.GetProperty("action").GetString()).ToList();
        Assert.Contains("machine.user-state", audit);
    }
}
