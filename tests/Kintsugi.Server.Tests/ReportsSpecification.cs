using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

public sealed class ReportsSpecification
{
    [Fact]
    public async Task Exposure_lists_machines_with_a_fix_available_until_they_apply_it()
    {
        await using var fleet = await ThreeMachineFleet.StartAsync();
        var server = fleet.Server;

        var cve = (await server.GetJsonAsync("/api/v1/reports/exposure")).GetProperty("cves").EnumerateArray().Single();
        Assert.Equal("CVE-2024-1086", cve.GetProperty("cve").GetString());
        Assert.Equal(1, cve.GetProperty("fixed").GetInt32());
        Assert.Equal(1, cve.GetProperty("exposed").GetInt32());
        var machine = cve.GetProperty("machines").EnumerateArray().Single();
        Assert.Equal("exposed", machine.GetProperty("hostname").GetString());
        Assert.Equal("2025-01-10", machine.GetProperty("exposedSince").GetString());

        await fleet.PatchExposedAsync();
        Assert.Equal(0, (await server.GetJsonAsync("/api/v1/reports/exposure?cve=CVE-2024-1086"))
            .GetProperty("cves")[0].GetProperty("exposed").GetInt32());
    }

    [Fact]
    public async Task Compliance_flags_a_machine_that_did_not_apply_a_fix_within_30_days_in_json_csv_and_html()
    {
        await using var server = await TestServer.StartAsync();
        await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1,
            ("CVE-2024-1086", CveSeverity.Critical), ("CVE-2023-0001", CveSeverity.Low)));
        var token = await server.EnrollmentTokenAsync();
        var prompt = new SimulatedAgent(server, Kernels.Debian61, "prompt");
        var slow = new SimulatedAgent(server, Kernels.Debian61, "slow");
        await prompt.EnrollAsync(token); await slow.EnrollAsync(token);
        await prompt.SyncAsync(server.Publisher.PublicKey);
        await slow.CheckInAsync();

        var today = await server.GetJsonAsync("/api/v1/reports/compliance");
        Assert.Equal(2, today.GetProperty("rows").GetInt32()); // the low-severity CVE is below the default threshold
        Assert.Equal(0, today.GetProperty("breaches").GetInt32());
        var rows =
            today.GetProperty("items").EnumerateArray().ToDictionary(r => r.GetProperty("hostname").GetString()!);
        Assert.Equal("compliant", rows["prompt"].GetProperty("status").GetString());
        Assert.Equal("open", rows["slow"].GetProperty("status").GetString());

        var asOf = Uri.EscapeDataString(DateTimeOffset.UtcNow.AddDays(31).ToString("O"));
        var later = await server.GetJsonAsync($"/api/v1/reports/compliance?asOf={asOf}");
        Assert.Equal(1, later.GetProperty("breaches").GetInt32());
        var breach = later.GetProperty("items").EnumerateArray().Single(r => r.GetProperty("breach").GetBoolean());
        Assert.Equal("slow", breach.GetProperty("hostname").GetString());
        Assert.Equal("overdue", breach.GetProperty("status").GetString());

        var csv = await server.Admin.GetStringAsync($"/api/v1/reports/compliance?format=csv&asOf={asOf}");
        var lines = csv.TrimEnd('\n').Split('\n');
        Assert.StartsWith("machine,hostname,channel,kernel_release,build_id,cve,severity,fix_released_at,deadline," +
            "applied_at", lines[0]);
        Assert.Equal(3, lines.Length);
        Assert.Contains(lines, l => l.Contains(",slow,") && l.EndsWith(",overdue,true"));
        var html = await server.Admin.GetStringAsync($"/api/v1/reports/compliance?format=html&asOf={asOf}");
        Assert.Contains("PCI DSS 6.3.3", html);
        Assert.Contains("1 in breach", html);
        Assert.Equal(HttpStatusCode.BadRequest,
            (await server.Admin.GetAsync("/api/v1/reports/compliance?format=pdf")).StatusCode);
    }

    [Fact]
    public async Task Metrics_are_prometheus_text_with_check_ins_states_exposure_and_latency()
    {
        await using var server = await TestServer.StartAsync();
        await server.PublishAsync(
            Kernels.Bundle(server.Publisher, Kernels.Debian61, 1, ("CVE-2024-1086", CveSeverity.High)));
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        await agent.CheckInAsync();
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client().GetAsync("/metrics")).StatusCode);
        var metrics = await server.Admin.GetStringAsync("/metrics");
        Assert.Contains("kintsugi_checkins_total{action=\"apply\"} 1", metrics);
        Assert.Contains("kintsugi_machines{state=\"nothing-to-apply\"} 1", metrics);
        Assert.Contains("kintsugi_cve_exposed_machines{cve=\"CVE-2024-1086\",severity=\"high\"} 1", metrics);
        Assert.Contains("kintsugi_enrollments_total 1", metrics);
        Assert.Matches("kintsugi_http_request_duration_seconds_count\\{method=\"POST\"," +
            "route=\"/api/v1/agent/checkin\",code=\"2xx\"\\} 1\n", metrics);
        foreach (var line in metrics.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith('#')))
            Assert.Matches("^[a-z_]+(\\{[^}]*\\})? -?[0-9.e+-]+$", line);
    }

    [Fact]
    public async Task Enrollment_is_rate_limited_per_address()
    {
        await using var server = await TestServer.StartAsync(configure: o => o with { EnrollmentsPerMinute = 3 });
        var token = await server.EnrollmentTokenAsync();
        var statuses = new List<HttpStatusCode>();
        HttpResponseMessage? last = null;
        for (var i = 0; i < 5; i++) statuses.Add(
            (last = await new SimulatedAgent(server, Kernels.Debian61, $"m{i}").TryEnrollAsync(token)).StatusCode);
        Assert.Equal([HttpStatusCode.Created, HttpStatusCode.Created, HttpStatusCode.Created,
            HttpStatusCode.TooManyRequests, HttpStatusCode.TooManyRequests], statuses);
        Assert.True(last!.Headers.RetryAfter?.Delta > TimeSpan.Zero);
        Assert.Equal("application/problem+json", last.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task A_self_signed_certificate_is_made_on_first_run_and_kept()
    {
        using var directory = new TemporaryDirectory();
        var data = directory["kept"];
        string first;
        await using (var server =
            await TestServer.StartAsync(configure: o => o with { DataDirectory = directory["data"] }))
        {
            first = server.Server.CertificateFingerprint!;
            Assert.Contains("10.0.2.2",
                server.Certificate.Extensions
                    .OfType<System.Security.Cryptography.X509Certificates.X509SubjectAlternativeNameExtension>()
                    .Single().EnumerateIPAddresses().Select(a => a.ToString()));
            CopyDirectory(server.Options.DataDirectory, data);
        }
        await using var again = await TestServer.StartAsync(dataDirectory: data);
        Assert.Equal(first, again.Server.CertificateFingerprint);
        Assert.Null(again.Server.InitialAdminToken); // the first admin token is made once
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (var dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(dir.Replace(from, to));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, file.Replace(from, to));
    }

    [Fact]
    public async Task Export_and_import_move_signed_releases_to_a_server_that_trusts_their_key()
    {
        await using var source = await TestServer.StartAsync();
        await source.PublishAsync(
            Kernels.Bundle(source.Publisher, Kernels.Debian61, 1, ("CVE-2024-1086", CveSeverity.High)));
        var revoked = await source.PublishAsync(Kernels.Bundle(source.Publisher, Kernels.Debian61, 2));
        await source.PublishAsync(Kernels.Bundle(source.Publisher, Kernels.Debian612, 1));
        (await source.PostJsonAsync($"/api/v1/releases/{revoked}/revoke", new { reason = "bad" }))
            .EnsureSuccessStatusCode();
        var archive = await source.Admin.GetByteArrayAsync("/api/v1/export");

        await using var airGapped = await TestServer.StartAsync();
        var untrusted = await airGapped.Admin.PostAsync("/api/v1/import", new ByteArrayContent(archive));
        var refused = await untrusted.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(2, refused.GetProperty("refused").GetInt32()); // its own publisher key is not source's
        Assert.Empty((await airGapped.GetJsonAsync("/api/v1/releases")).EnumerateArray());

        (await airGapped.PostJsonAsync("/api/v1/keys", new { pem = source.Publisher.PublicKey.ExportPem() }))
            .EnsureSuccessStatusCode();
        var imported = await (await airGapped.Admin.PostAsync("/api/v1/import", new ByteArrayContent(archive)))
            .Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(2, imported.GetProperty("imported").GetInt32());
        var releases = (await airGapped.GetJsonAsync("/api/v1/releases")).EnumerateArray()
            .Select(r => (r.GetProperty("kernelRelease").GetString(), r.GetProperty("level").GetInt32())).ToList();
        Assert.Equal([("6.1.0-56-cloud-amd64", 1), ("6.12.117+deb12-cloud-amd64", 1)], releases);

        archive[archive.Length / 2] ^= 0xff;
        var damaged = await airGapped.Admin.PostAsync("/api/v1/import", new ByteArrayContent(archive));
        Assert.Equal(HttpStatusCode.BadRequest, damaged.StatusCode);
    }
}
