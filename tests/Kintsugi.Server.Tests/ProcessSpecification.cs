using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Protocol;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>Real processes: two replicas over one PostgreSQL, and the operator CLI against a running server.</summary>
[Collection("postgres")]
public sealed class ProcessSpecification
{
    private static HttpClient Http(string url, string? bearer)
    {
        var client = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(60) };
        if (bearer is not null) client.DefaultRequestHeaders.Authorization =
            new AuthenticationHeaderValue("Bearer", bearer);
        return client;
    }

    [Fact]
    public void The_shared_server_process_reads_the_admin_token_file_the_server_writes() =>
        Assert.Equal(ServerApp.AdminTokenFile, ServerProcess.AdminTokenFileName);

    [Fact]
    public async Task Two_replicas_over_one_postgres_serve_one_fleet_and_a_revoke_on_one_wakes_agents_on_the_other()
    {
        var database = Postgres.NewDatabase();
        await using var a = await ServerProcess.StartAsync(postgres: database, https: false, host: "127.0.0.1");
        await using var b = await ServerProcess.StartAsync(postgres: database, https: false, host: "127.0.0.1");
        var admin = a.AdminToken.Length > 0 ? a.AdminToken : b.AdminToken; // whichever replica made the first token
        using var adminA = Http(a.Url, admin);
        using var adminB = Http(b.Url, admin);
        using var publisher = PublisherKey.Generate();
        (await adminB.PostAsJsonAsync("/api/v1/keys", new { pem = publisher.PublicKey.ExportPem() }))
            .EnsureSuccessStatusCode();
        var published = new List<string>();
        foreach (var level in new[] { 1, 2 })
        {
            var response =
                await adminA.PostAsync("/api/v1/releases",
                new ByteArrayContent(Kernels.Bundle(publisher, Kernels.Debian61,
                level))
                { Headers = { ContentType = new MediaTypeHeaderValue("application/octet-stream") } });
            response.EnsureSuccessStatusCode();
            published.Add((await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("release")
                .GetProperty("id").GetString()!);
        }
        var token = (await (await adminB.PostAsJsonAsync("/api/v1/enrollment-tokens", new { channel = "canary" }))
            .Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;

        // Enroll on B, check in on A: the replicas share the machine.
        using var anonymousB = Http(b.Url, null);
        var enroll = new EnrollRequest(token, "web-1", Convert.ToHexStringLower(Guid.NewGuid().ToByteArray()),
            new KernelIdentity(Kernels.Debian61.Release, Kernels.Debian61.BuildId), "0.1.0");
        var enrolled = (await (await anonymousB.PostAsJsonAsync(ProtocolPaths.Enroll, enroll,
            ProtocolJson.Default.EnrollRequest)).Content.ReadFromJsonAsync(ProtocolJson.Default.EnrollResponse))!;
        using var agentA = Http(a.Url, enrolled.Credential);
        var offer = (await (await agentA.PostAsJsonAsync(ProtocolPaths.CheckIn, new CheckInRequest(enroll.Kernel,
            PatchState.NothingToApply, null, null, null, 0, null, "0.1.0"), ProtocolJson.Default.CheckInRequest))
            .Content.ReadFromJsonAsync(ProtocolJson.Default.CheckInResponse))!;
        Assert.Equal(2, offer.Release!.Level);
        // Replica B never saw the bundle's upload; it serves it from the shared database.
        using var agentB = Http(b.Url, enrolled.Credential);
        Assert.Equal(offer.Release.Bundle, Sha256Digest.Of(await agentB.GetByteArrayAsync(offer.Release.Url)));
        var applied =
            new CheckInRequest(enroll.Kernel, PatchState.Applied, 2, offer.Release.Bundle, null, 0, null, "0.1.0");
        (await agentA.PostAsJsonAsync(ProtocolPaths.CheckIn, applied, ProtocolJson.Default.CheckInRequest))
            .EnsureSuccessStatusCode();

        var poll = agentA.GetFromJsonAsync(ProtocolPaths.EventsAfter(offer.Epoch), ProtocolJson.Default.EventsResponse);
        await Task.Delay(500);
        Assert.False(poll.IsCompleted);
        var clock = Stopwatch.StartNew();
        (await adminB.PostAsJsonAsync($"/api/v1/releases/{published[1]}/revoke", new { reason = "bad on canary" }))
            .EnsureSuccessStatusCode();
        var moved = await poll;
        Assert.True(moved!.Epoch > offer.Epoch);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2),
            $"replica A took {clock.Elapsed} to notice the revoke made on B");
        var rollback = (await (await agentA.PostAsJsonAsync(ProtocolPaths.CheckIn, applied,
            ProtocolJson.Default.CheckInRequest)).Content.ReadFromJsonAsync(ProtocolJson.Default.CheckInResponse))!;
        Assert.Equal(CheckInAction.Apply, rollback.Action);
        Assert.Equal(1, rollback.Release!.Level);

        var verify = await adminA.GetFromJsonAsync<JsonElement>("/api/v1/audit/verify");
        Assert.True(verify.GetProperty("intact").GetBoolean(), verify.ToString());
    }

    [Fact]
    public async Task The_operator_cli_publishes_lists_revokes_reports_and_verifies_against_a_running_server()
    {
        await using var server = await ServerProcess.StartAsync(host: "127.0.0.1");
        var ca = Path.Combine(server.DataDirectory, "tls", "server.crt");
        using var publisher = PublisherKey.Generate();
        var keyFile = Path.Combine(server.DataDirectory, "publisher.pem");
        publisher.PublicKey.Save(keyFile);
        var bundleFile = Path.Combine(server.DataDirectory, "level1.kbundle");
        await File.WriteAllBytesAsync(bundleFile,
            Kernels.Bundle(publisher, Kernels.Debian61, 1, ("CVE-2024-1086", CveSeverity.High)));
        (int Code, string Out) Cli(params string[] args) => CliAs(server.AdminToken, args);
        (int Code, string Out) CliAs(string token, params string[] args) =>
            OperatorCli.Run(server.Url, token, ca, args);

        var refused = Cli("publish", bundleFile);
        Assert.True(refused.Code == 3, refused.Out); // not yet trusted
        Assert.Contains("trusted publisher keys", refused.Out);
        Assert.Equal(0, Cli("trust", "add", keyFile).Code);
        var publish = Cli("publish", "--json", bundleFile);
        Assert.True(publish.Code == 0, publish.Out);
        var id = JsonDocument.Parse(publish.Out).RootElement[0].GetProperty("release").GetProperty("id").GetString()!;
        var releases = Cli("releases");
        // The shared table renderer: a header, and each release on one line even when the output is redirected.
        Assert.Contains(releases.Out.Split('\n'), line =>
            line.Contains("release") && line.Contains("target") && line.Contains("channels"));
        Assert.Contains(releases.Out.Split('\n'), line =>
            line.Contains(id) && line.Contains("canary") && line.Contains("active"));
        var token = Cli("tokens", "enroll", "--channel", "production", "--max-uses", "5");
        Assert.StartsWith("ket_", token.Out.Trim());
        var promote = Cli("promote", id, "--channel", "production", "--reason", "tested");
        Assert.True(promote.Code == 0, promote.Out);
        Assert.Equal(0, Cli("revoke", id, "--reason", "regression").Code);
        Assert.Equal(6, Cli("revoke", "r_0000000000000000", "--reason", "x").Code);
        var csv = Cli("report", "compliance", "--format", "csv");
        Assert.StartsWith("machine,hostname", csv.Out);
        Assert.Equal(0, Cli("machines", "--json").Code);
        var verify = Cli("audit", "verify");
        Assert.True(verify.Code == 0, verify.Out);
        Assert.Contains("intact", verify.Out);
        var log = Cli("audit", "log");
        Assert.Contains("release.revoke", log.Out);
        var wrongToken = CliAs("kat_" + new string('x', 43), "machines");
        Assert.Equal(5, wrongToken.Code);
    }
}
