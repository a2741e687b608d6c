using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Lab;
using Kintsugi.Protocol;
using Kintsugi.Testing;
using static Kintsugi.Testing.GuestOutput;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// A hostile server of our own against the real agent binary in a booted Debian 12 guest (6.1 only: the refusals are
/// the agent's and do not depend on the kernel line; one boot). The machine runs level 3 under signed release
/// metadata that revokes level 1; then the server, phase by phase (the guest script names each phase to it), offers
/// a lower level, the revoked level, the revoked bundle under a made-up higher level, says a bare <c>remove</c>,
/// stalls a download after its headers, and goes on serving metadata after it expired (the guest's clock moved on
/// ten days: a freeze). Each is refused or reported, by the agent's exit code and output and in its check-ins, and
/// level 3 stays loaded throughout.
/// </summary>
public sealed class HostileServerLabSpecification : IDisposable
{
    private const string A = "kintsugi_fixture_cmdline_a";
    private const string B = "kintsugi_fixture_cmdline_b";

    private readonly GuestInputs _inputs = new();
    private readonly PublisherKey _publisher = PublisherKey.Generate();

    public void Dispose()
    {
        _publisher.Dispose();
        _inputs.Dispose();
    }

    private sealed record Offered(byte[] Bundle, int Level)
    {
        public Sha256Digest Digest { get; } = Sha256Digest.Of(Bundle);

        public ReleaseOffer Offer(int? claimed = null) =>
            new(claimed ?? Level, Digest, Bundle.Length, ProtocolPaths.Bundle(Digest));
    }

    [Fact]
    public async Task A_hostile_server_cannot_roll_back_strip_or_stall_the_agent_in_a_guest_and_each_try_is_reported()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        var level1 = new Offered(Inputs.Sign(_publisher, kernel, B, 1), 1);
        var level2 = new Offered(Inputs.Sign(_publisher, kernel, B, 2), 2);
        var level3 = new Offered(Inputs.Sign(_publisher, kernel, A, 3), 3);
        var level4 = new Offered(Inputs.Sign(_publisher, kernel, B, 4), 4);
        var bundles = new[] { level1, level2, level3, level4 }.ToDictionary(o => o.Offer().Url);
        // Signed by the publisher: levels up to 5 are released, level 1 is revoked; valid for a week.
        var metadata = SignedReleaseMetadata.Create(new ReleaseMetadataDescription(kernel.Kernel.Target, 1, 5, 0, [1],
            DateTimeOffset.UtcNow.AddDays(7)), _publisher).Text;

        var phase = "none";
        var checkIns = new List<(string Phase, JsonElement Report)>();
        using var server = new FakeServer(anyHost: true);
        server.Handler = r =>
        {
            if (r.PathAndQuery.StartsWith("/lab/phase/", StringComparison.Ordinal))
            {
                phase = r.PathAndQuery["/lab/phase/".Length..];
                return new(200, "");
            }
            if (r.PathAndQuery == ProtocolPaths.Enroll)
                return new(201, new EnrollResponse("m_lab", "kmc_lab", 3600, 30));
            if (r.Authorization != "Bearer kmc_lab") return new(401, FakeServer.Problem(401, "unknown credential"));
            if (bundles.TryGetValue(r.PathAndQuery, out var served))
                return phase == "stall" ? new(200, served.Bundle, "application/octet-stream", StallAfter: 1000)
                    : new(200, served.Bundle, "application/octet-stream");
            if (r.PathAndQuery != ProtocolPaths.CheckIn) return new(404);
            lock (checkIns) checkIns.Add((phase, r.Json));
            ReleaseOffer? offer = phase switch
            {
                "apply" => level3.Offer(),
                "lower" => level2.Offer(),
                "revoked" => level1.Offer(),
                "lying" => level1.Offer(claimed: 5),
                "stall" => level4.Offer(),
                _ => null,
            };
            var action = offer is not null ? CheckInAction.Apply
                : phase == "remove" ? CheckInAction.Remove : CheckInAction.None;
            return new(200, new CheckInResponse(action, offer, 3600, 30, 1, metadata));
        };
        var config = $"""
            server = http://10.0.2.2:{server.Port}/
            insecure-http = yes
            token = ket_lab
            trust = /etc/kintsugi/trust
            settle = 1
            """ + "\n";
        var publicKey = _inputs.Add("publisher.pub", _publisher.PublicKey.ExportPem());

        var result = await kernel.RunAsync($$"""
            mkdir -p /etc/kintsugi
            kintsugi keys trust /inputs/publisher.pub --trust /etc/kintsugi/trust || exit 10
            cp /inputs/agent.conf /etc/kintsugi/agent.conf
            step() {
              wget -q -O /dev/null "http://10.0.2.2:{{server.Port}}/lab/phase/$1" || exit 11
              echo "@$1"; kintsugi agent run --once 2>&1; echo "@$1=$?"
              echo "@$1-livepatches"; ls /sys/kernel/livepatch
            }
            step apply
            step lower
            step revoked
            step lying
            step remove
            step stall
            # A freeze: ten days pass and the server still sends the week-old metadata.
            date -s "@$(( $(date +%s) + 864000 ))" > /dev/null || exit 12
            step stale
            echo @status; kintsugi status --json
            echo @end
            """, [publicKey, _inputs.Add("agent.conf", config)], timeoutSeconds: 420);
        var output = result.Output;
        var context = $"{output}\n--- console\n{result.Console}";
        Assert.True(result.ExitCode == 0, $"{result.Describe()}\n--- output\n{context}");
        var downloads = server.Requests.Where(r => bundles.ContainsKey(r.PathAndQuery)).Select(r => r.PathAndQuery)
            .ToList();
        List<(string Phase, JsonElement Report)> reports;
        lock (checkIns) reports = [.. checkIns];
        void Has(string text, string expected) =>
            Assert.True(text.Contains(expected, StringComparison.Ordinal),
            $"'{expected}' not in:\n{text}\n---\n{context}");
        string LastDetail(string name) =>
            reports.Last(c => c.Phase == name).Report.GetProperty("detail").GetString() ?? "";

        // Level 3 applied under the signed metadata; it stays loaded through every later phase.
        Assert.True(ReturnCode(output, "apply") == 0, context);
        foreach (var name in new[] { "apply", "lower", "revoked", "lying", "remove", "stall", "stale" })
            Assert.True(Section(output, $"{name}-livepatches") == A, $"{name}: {context}");

        // A lower level: a rollback, refused before download, reported.
        Assert.True(ReturnCode(output, "lower") == (int)ExitCode.InputRefused, context);
        Has(Section(output, "lower"), "below the running level 3");
        Assert.DoesNotContain(level2.Offer().Url, downloads);
        Has(LastDetail("lower"), "a rollback is refused");

        // The revoked level, offered as what it is: refused before download, reported.
        Assert.True(ReturnCode(output, "revoked") == (int)ExitCode.InputRefused, context);
        Has(Section(output, "revoked"), "level 1 is revoked by signed release metadata version 1");
        Has(LastDetail("revoked"), "level 1 is revoked");

        // The revoked bundle offered as level 5: the signed level inside decides, after verification.
        Assert.True(ReturnCode(output, "lying") == (int)ExitCode.InputRefused, context);
        Has(Section(output, "lying"), "nothing loaded: level 1 is revoked");
        Assert.Single(downloads, level1.Offer().Url);
        Has(LastDetail("lying"), "nothing loaded: level 1 is revoked");

        // A bare remove: nothing signed revokes level 3, so it is refused and reported.
        Assert.True(ReturnCode(output, "remove") == (int)ExitCode.InputRefused, context);
        Has(Section(output, "remove"), "refused, level 3 keeps running");
        Has(LastDetail("remove"), "refused, level 3 keeps running");

        // A download stalled after its headers ends at the agent's idle timeout and is reported.
        Assert.True(ReturnCode(output, "stall") == (int)ExitCode.Environment, context);
        Has(Section(output, "stall"), "sent nothing for 30 s after 1000 bytes");
        Has(LastDetail("stall"), "download of level 4");
        Has(LastDetail("stall"), "level 3 keeps running");

        // Ten days on, the week-old metadata is stale: said in the output and in the check-in.
        Has(Section(output, "stale"), "is stale");
        var stale = reports.Last(c => c.Phase == "stale").Report.GetProperty("metadata");
        Assert.Equal("stale", stale.GetProperty("freshness").GetString());
        Assert.Equal(1, stale.GetProperty("version").GetInt64());

        using var status = JsonDocument.Parse(Section(output, "status"));
        Assert.Equal(3, status.RootElement.GetProperty("level").GetInt32());
        Assert.Equal(level3.Digest.ToString(), status.RootElement.GetProperty("bundle").GetString());
    }
}
