using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Kintsugi.Agent;
using Kintsugi.Kernel;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>
/// The real agent (<see cref="MachineAgent"/>, on this host, nothing to apply for its kernel) against the real
/// server: when the server answers 401 to its machine credential, because an operator deleted the machine
/// or the server's data was reset, the agent enrolls again with its configured token.
/// </summary>
public sealed class AgentReenrollmentSpecification : IDisposable
{
    private readonly TemporaryDirectory _machine = new();
    private readonly List<string> _log = [];

    public void Dispose() => _machine.Dispose();

    private MachinePaths Paths => new(_machine["state"], _machine["etc"], _machine["run"], _machine["systemd"]);

    private string Credential => File.ReadAllText(Path.Combine(_machine.Path, "state", "agent", "credential")).Trim();

    /// <summary>The agent as configured on a machine: the server's URL, a token, and the server's tls/server.crt as
    /// server-ca.</summary>
    private MachineAgent Agent(TestServer server, string token, string? serverCa = null) =>
        new(new AgentConfig
        {
            Server = server.BaseAddress,
            EnrollmentToken = token,
            ServerCertificate = serverCa ?? Path.Combine(server.Options.DataDirectory, "tls", "server.crt"),
            TrustStore = _machine["trust"],
            Settle = TimeSpan.Zero,
        }, Paths, line => { lock (_log) _log.Add(line); });

    private static async Task<JsonElement> OnlyMachineAsync(TestServer server) =>
        Assert.Single((await server.GetJsonAsync("/api/v1/machines")).EnumerateArray());

    private static async Task<List<string>> AuditActionsAsync(TestServer server) =>
        [.. (await server.GetJsonAsync("/api/v1/audit")).EnumerateArray()
        .Select(e => e.GetProperty("action").GetString()!)];

    private static async Task DeleteAsync(TestServer server, string machine) =>
        Assert.Equal(HttpStatusCode.NoContent,
        (await server.Admin.DeleteAsync($"/api/v1/machines/{machine}")).StatusCode);

    /// <summary>When the one machine last checked in; null before any machine has.</summary>
    private static async Task<DateTimeOffset?> LastCheckInAsync(TestServer server) =>
        (await server.GetJsonAsync("/api/v1/machines")).EnumerateArray()
        .SingleOrDefault() is { ValueKind: JsonValueKind.Object } machine
        && machine.GetProperty("lastCheckIn") is { ValueKind: JsonValueKind.String } at ? at.GetDateTimeOffset() : null;

    [Fact]
    public async Task The_agent_talks_only_to_a_server_presenting_the_certificate_named_by_server_ca()
    {
        await using var server = await TestServer.StartAsync();
        await using var impostor = await TestServer.StartAsync();
        var token = await server.EnrollmentTokenAsync();
        var refused = await Assert.ThrowsAsync<ServerUnavailableException>(() => Agent(server, token,
            Path.Combine(impostor.Options.DataDirectory, "tls", "server.crt")).RunOnceAsync(default));
        Assert.Contains("cannot reach", refused.Message);
        Assert.Empty((await server.GetJsonAsync("/api/v1/machines")).EnumerateArray());
        var result = await Agent(server, token).RunOnceAsync(default);
        Assert.Equal(result.State, (await OnlyMachineAsync(server)).GetProperty("state").GetString());
    }

    [Fact]
    public async Task A_machine_deleted_on_the_server_enrolls_again_with_its_token_at_the_next_check_in()
    {
        await using var server = await TestServer.StartAsync();
        var token = await server.EnrollmentTokenAsync();
        await Agent(server, token).RunOnceAsync(default);
        var first = (await OnlyMachineAsync(server)).GetProperty("id").GetString()!;
        var firstCredential = Credential;

        await DeleteAsync(server, first);
        var result = await Agent(server, token).RunOnceAsync(default);

        var again = await OnlyMachineAsync(server);
        Assert.NotEqual(first, again.GetProperty("id").GetString());
        Assert.Equal(result.State, again.GetProperty("state").GetString());
        Assert.NotEqual(firstCredential, Credential);
        lock (_log) Assert.Contains(_log, l => l.Contains("enrolling again with the configured token"));
        var actions = await AuditActionsAsync(server);
        Assert.Equal(["machine.enroll", "machine.delete", "machine.enroll"],
            actions.Where(a => a.StartsWith("machine.", StringComparison.Ordinal) && a != "machine.state"));
    }

    [Fact]
    public async Task
        A_running_agent_whose_credential_is_refused_enrolls_again_within_seconds_not_at_its_hourly_check_in()
    {
        await using var server = await TestServer.StartAsync(configure: o => o with { EventsWaitSeconds = 2 });
        var token = await server.EnrollmentTokenAsync();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var run = Agent(server, token).RunAsync(stop.Token);
        while (!stop.IsCancellationRequested && await LastCheckInAsync(server) is null) await Task.Delay(100);
        var first = (await OnlyMachineAsync(server)).GetProperty("id").GetString()!;
        await Task.Delay(500); // the events long-poll is held with the old credential

        var clock = Stopwatch.StartNew();
        await DeleteAsync(server, first);
        while (!stop.IsCancellationRequested && (await server.GetJsonAsync("/api/v1/machines")).GetArrayLength() == 0)
            await Task.Delay(100);
        var elapsed = clock.Elapsed;
        stop.Cancel();
        await run;

        // The check-in interval is an hour: the refused events poll made the agent check in and enroll again.
        Assert.Equal(3600, server.Options.CheckInSeconds);
        Assert.True(elapsed < TimeSpan.FromSeconds(15),
            $"the agent enrolled again {elapsed} after its machine was deleted");
        Assert.NotEqual(first, (await OnlyMachineAsync(server)).GetProperty("id").GetString());
    }

    [Fact]
    public async Task
        After_the_servers_data_is_reset_the_agent_enrolls_with_its_new_token_and_follows_the_new_servers_epoch()
    {
        var port = Ports.Free();
        using var work = new TemporaryDirectory();
        var certificate = Directory.CreateDirectory(work["tls"]).FullName;
        ServerOptions SamePlace(ServerOptions o) =>
            o with { Urls = [$"https://127.0.0.1:{port}"], EventsWaitSeconds = 2 };
        long oldEpoch;
        await using (var old = await TestServer.StartAsync(configure: SamePlace))
        {
            // The old server's epoch moves with three publications and two revokes.
            var releases = new List<string>();
            foreach (var level in new[] { 1, 2, 3 })
                releases.Add(await old.PublishAsync(Kernels.Bundle(old.Publisher, Kernels.Debian61, level)));
            foreach (var id in releases.Skip(1)) (await old.PostJsonAsync($"/api/v1/releases/{id}/revoke",
                new { reason = "raise the epoch" })).EnsureSuccessStatusCode();
            await Agent(old, await old.EnrollmentTokenAsync()).RunOnceAsync(default);
            oldEpoch = (await old.GetJsonAsync("/api/v1/server")).GetProperty("epoch").GetInt64();
            foreach (var file in new[] { "server.pfx", "server.crt" })
                File.Copy(Path.Combine(old.Options.DataDirectory, "tls", file), Path.Combine(certificate, file));
        }

        // The operator resets the server's data, keeping its certificate, and gives the machine a new token.
        var data = Directory.CreateDirectory(work["data"], UnixFileMode.UserRead | UnixFileMode.UserWrite
            | UnixFileMode.UserExecute).FullName;
        CopyDirectory(certificate, Path.Combine(data, "tls"));
        await using var reset = await TestServer.StartAsync(configure: SamePlace, dataDirectory: data);
        var agent = Agent(reset, await reset.EnrollmentTokenAsync());
        await agent.RunOnceAsync(default);
        var machine = (await OnlyMachineAsync(reset)).GetProperty("id").GetString();
        lock (_log) Assert.Contains(_log, l => l.Contains("enrolling again with the configured token"));

        // A publication and a revoke on the new server move its epoch, still below the old one: the agent hears of
        // them at once.
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var running = DateTimeOffset.UtcNow;
        var run = agent.RunAsync(stop.Token);
        while (!stop.IsCancellationRequested && await LastCheckInAsync(reset) < running) await Task.Delay(100);
        await Task.Delay(500); // the events long-poll is held
        var release = await reset.PublishAsync(Kernels.Bundle(reset.Publisher, Kernels.Debian61, 1));
        (await reset.PostJsonAsync($"/api/v1/releases/{release}/revoke", new { reason = "regression" }))
            .EnsureSuccessStatusCode();
        var revokedAt = DateTimeOffset.UtcNow;
        var newEpoch = (await reset.GetJsonAsync("/api/v1/server")).GetProperty("epoch").GetInt64();
        Assert.True(newEpoch < oldEpoch, $"the new server's epoch {newEpoch} should be below the old {oldEpoch}");
        while (!stop.IsCancellationRequested && await LastCheckInAsync(reset) < revokedAt) await Task.Delay(100);
        var elapsed = DateTimeOffset.UtcNow - revokedAt;
        stop.Cancel();
        await run;
        Assert.True(elapsed < TimeSpan.FromSeconds(10),
            $"the agent checked in {elapsed} after a revoke on the reset server (check-in interval: an hour)");
        Assert.Equal(machine, (await OnlyMachineAsync(reset)).GetProperty("id").GetString());
        lock (_log) Assert.Contains(_log, l => l.Contains("the server's epoch moved to"));
    }

    [Fact]
    public async Task
        A_second_host_with_this_machines_machine_id_cannot_enroll_as_it_and_the_machine_keeps_its_credential()
    {
        await using var server = await TestServer.StartAsync();
        var token = await server.EnrollmentTokenAsync();
        await Agent(server, token).RunOnceAsync(default);
        var credential = Credential;
        // Another agent on the same /etc/machine-id (a clone, or someone who copied the file) with a valid token.
        using (var otherMachine = new TemporaryDirectory())
        {
            var other = otherMachine.Path;
            // Where /etc/machine-id is empty the agent keeps its own id in its state directory: copy that instead.
            if (File.Exists(Path.Combine(_machine.Path, "state", "agent", "machine-id")))
            {
                Directory.CreateDirectory(Path.Combine(other, "state", "agent"));
                File.Copy(Path.Combine(_machine.Path, "state", "agent", "machine-id"),
                    Path.Combine(other, "state", "agent", "machine-id"));
            }
            var impostor = new MachineAgent(new AgentConfig
            {
                Server = server.BaseAddress,
                EnrollmentToken = token,
                ServerCertificate = Path.Combine(server.Options.DataDirectory, "tls", "server.crt"),
                TrustStore = Path.Combine(other, "trust"),
                Settle = TimeSpan.Zero,
            }, new MachinePaths(Path.Combine(other, "state"), Path.Combine(other, "etc"), Path.Combine(other, "run"),
            Path.Combine(other, "systemd")), _ => { });

            var refused = await Assert.ThrowsAsync<AgentException>(() => impostor.RunOnceAsync(default));

            Assert.Contains("refused to enroll this machine again", refused.Message);
            Assert.Contains("operator's approval", refused.Message);
        }
        var result = await Agent(server, token).RunOnceAsync(default);
        Assert.Equal(credential, Credential);
        Assert.Equal(JsonValueKind.String, (await OnlyMachineAsync(server)).GetProperty("cloneSuspectedAt").ValueKind);
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
    }
}
