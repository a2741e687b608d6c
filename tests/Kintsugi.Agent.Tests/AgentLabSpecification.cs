using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Lab;
using Kintsugi.Protocol;
using Kintsugi.Testing;
using static Kintsugi.Testing.GuestOutput;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// The agent on a real Debian kernel booted in the lab: the real binary in the guest, offline mode from a
/// directory of bundles signed here, a persistent disk across boots, and the agent's systemd unit started
/// at boot by the guest's /init. Each kernel line runs the same specification (derived classes at the end).
/// </summary>
public abstract class AgentLabSpecification(KernelRelease release) : IDisposable
{
    private const string MarkerA = "kintsugi-fixture-a: live patched";
    private const string MarkerB = "kintsugi-fixture-b: cumulative replacement";
    private const string MarkerWarn = "kintsugi-fixture-warn: live patched";
    private const string A = "kintsugi_fixture_cmdline_a";
    private const string B = "kintsugi_fixture_cmdline_b";
    private const string Warn = "kintsugi_fixture_cmdline_warn";
    private const string Offline = "/var/lib/kintsugi/offline";
    private const string Config = "/etc/kintsugi/agent.conf";

    private readonly GuestInputs _inputs = new();
    private readonly PublisherKey _publisher = PublisherKey.Generate();

    public void Dispose()
    {
        _publisher.Dispose();
        _inputs.Dispose();
    }

    private Task<KernelUnderTest> Kernel => KernelUnderTest.GetAsync(release);

    private static string Marker(string module) => module switch { A => MarkerA, B => MarkerB, _ => MarkerWarn };

    private GuestFile PublicKey() => _inputs.Add("publisher.pub", _publisher.PublicKey.ExportPem());

    private static string AgentConfig(string onBug = "revert") => $"""
        # the lab's agent: offline mode
        offline-directory = {Offline}
        trust = /etc/kintsugi/trust
        check-interval = 1h
        settle = 1
        on-bug = {onBug}
        """ + "\n";

    private const string Setup = $"""
        mkdir -p {Offline} /etc/kintsugi
        kintsugi keys trust /inputs/publisher.pub --trust /etc/kintsugi/trust || exit 10
        cp /inputs/agent.conf {Config}
        sync
        """;

    private static int? Level(JsonElement element) =>
        element.GetProperty("level") is { ValueKind: JsonValueKind.Number } level ? level.GetInt32() : null;

    /// <summary>The machine as the guest sees it: loaded livepatches, /proc/cmdline, kintsugi status --json.</summary>
    private const string Report = """
        echo @livepatches; ls /sys/kernel/livepatch
        echo @cmdline; cat /proc/cmdline
        echo @status; kintsugi status --json
        echo @end
        """;

    [Fact]
    public async Task Offline_the_agent_refuses_bad_bundles_loading_nothing_then_applies_the_highest_good_level()
    {
        var kernel = await Kernel;
        var other = await KernelUnderTest.GetAsync(release == TestKernels.Debian12Cloud61 ? TestKernels.Debian12Cloud612
            : TestKernels.Debian12Cloud61);
        using var foreign = PublisherKey.Generate();
        using var retired = PublisherKey.Generate();

        var tampered = Inputs.Sign(_publisher, kernel, B, 5);
        tampered[Inputs.ModuleOffset(tampered) + 4096] ^= 0x01;
        var wrongBuild =
            new KernelTarget(kernel.Release, null, BuildId.Parse("00112233445566778899aabbccddeeff00112233"));
        var truncated = Inputs.Sign(_publisher, kernel, B, 9);
        var files = new List<GuestFile>
        {
            PublicKey(), _inputs.Add("agent.conf", AgentConfig()),
            _inputs.Add("retired.pub", retired.PublicKey.ExportPem()),
            _inputs.Add("bad/tampered.bundle", tampered),
            _inputs.Add("bad/foreign.bundle", Inputs.Sign(foreign, kernel, B, 6)),
            _inputs.Add("bad/retired.bundle", Inputs.Sign(retired, kernel, B, 7)),
            _inputs.Add("bad/wrong-build.bundle", Inputs.Sign(_publisher, kernel, B, 8, wrongBuild)),
            _inputs.Add("bad/truncated.bundle", truncated[..(truncated.Length - 100)]),
            _inputs.Add("bad/other-kernel.bundle", Inputs.Sign(_publisher, other, B, 10)),
            _inputs.Add("good/level-1.bundle", Inputs.Sign(_publisher, kernel, A, 1)),
            _inputs.Add("good/level-2.bundle", Inputs.Sign(_publisher, kernel, B, 2)),
            _inputs.Add("good/level-3.bundle", Inputs.Sign(_publisher, kernel, A, 3)),
        };

        var result = await kernel.RunAsync($"""
            {Setup}
            kintsugi keys trust /inputs/retired.pub --trust /etc/kintsugi/trust && kintsugi keys retire /inputs/retired.pub --trust /etc/kintsugi/trust || exit 11
            cp /inputs/bad/* {Offline}/
            echo @refusing; kintsugi agent run --once 2>&1; echo "@refused=$?"
            echo @bad-livepatches; ls /sys/kernel/livepatch
            echo @bad-status; kintsugi status --json
            rm {Offline}/*
            cp /inputs/good/level-1.bundle /inputs/good/level-2.bundle {Offline}/
            echo @applying; kintsugi agent run --once 2>&1; echo "@applied=$?"
            {Report}
            echo @uname-r; kintsugi uname -r
            echo @uname-v; kintsugi uname -v
            echo @uname-a; kintsugi uname -a
            echo @uname-sr; kintsugi uname -sr
            echo @again; kintsugi agent run --once 2>&1; echo "@again=$?"
            cp /inputs/good/level-3.bundle {Offline}/
            {FaultInjection.EnvironmentVariable}=loaded kintsugi agent run --once; echo "@killed=$?"
            echo @resumed; kintsugi agent run --once 2>&1; echo "@resumed=$?"
            echo @resumed-status; kintsugi status --json
            echo @end
            """, files, timeoutSeconds: 420);
        Succeeded(result);
        var output = result.Output;

        Assert.Equal((int)ExitCode.InputRefused, ReturnCode(output, "refused"));
        var refusing = Section(output, "refusing");
        Assert.Contains("tampered.bundle: the module", refusing);
        Assert.Contains("foreign.bundle: the bundle is signed by key", refusing);
        Assert.Contains("which is not in trust store", refusing);
        Assert.Contains("which is retired", refusing);
        Assert.Contains("same release, different build", refusing);
        Assert.Contains("truncated.bundle: the bundle is truncated", refusing);
        Assert.DoesNotContain("other-kernel.bundle", refusing);
        Assert.Equal("", Section(output, "bad-livepatches"));
        using (var bad = JsonDocument.Parse(Section(output, "bad-status")))
        {
            Assert.Equal("apply-failed", bad.RootElement.GetProperty("state").GetString());
            Assert.Equal(JsonValueKind.Null, bad.RootElement.GetProperty("level").ValueKind);
            Assert.Empty(bad.RootElement.GetProperty("patches").EnumerateArray());
        }

        Assert.Equal(0, ReturnCode(output, "applied"));
        Assert.Equal(B, Section(output, "livepatches"));
        Assert.Equal(MarkerB, Section(output, "cmdline"));
        using var status = JsonDocument.Parse(Section(output, "status"));
        var root = status.RootElement;
        Assert.Equal("applied", root.GetProperty("state").GetString());
        Assert.Equal(2, root.GetProperty("level").GetInt32());
        var cve = Assert.Single(root.GetProperty("cvesFixed").EnumerateArray());
        Assert.Equal("CVE-2024-1086", cve.GetProperty("id").GetString());
        Assert.Equal("high", cve.GetProperty("severity").GetString());
        Assert.Equal("2024-01-31", cve.GetProperty("published").GetString());
        Assert.Equal("99.0.0-kintsugi-fixture", root.GetProperty("effectivePackageVersion").GetString());
        // The package version whole; the build date after it is dropped when it would not fit the kernel's 64 bytes.
        Assert.Matches(@"Debian 99\.0\.0-kintsugi-fixture( |$)",
            root.GetProperty("effectiveVersion").GetString());
        Assert.Equal(Sha256Digest.Of(File.ReadAllBytes(_inputs["good/level-2.bundle"])).ToString(),
            root.GetProperty("bundle").GetString());

        Assert.Equal(release.Value, Section(output, "uname-r"));
        Assert.Equal(root.GetProperty("effectiveVersion").GetString(), Section(output, "uname-v"));
        Assert.StartsWith($"Linux ", Section(output, "uname-a"));
        Assert.Contains($" {release} #", Section(output, "uname-a"));
        Assert.EndsWith(" x86_64 GNU/Linux", Section(output, "uname-a"));
        Assert.Equal($"Linux {release}", Section(output, "uname-sr"));
        // Nothing new: the next check changes nothing.
        Assert.Equal(0, ReturnCode(output, "again"));
        Assert.Contains("state applied, level 2", Section(output, "again"));

        // The agent killed after the load, in the same boot (no crash): the next start resumes at the health check.
        Assert.Equal(137, ReturnCode(output, "killed"));
        Assert.Contains("resuming the apply of kintsugi_fixture_cmdline_a interrupted in this boot",
            Section(output, "resumed"));
        Assert.Equal(0, ReturnCode(output, "resumed"));
        using var resumed = JsonDocument.Parse(Section(output, "resumed-status"));
        Assert.Equal("applied", resumed.RootElement.GetProperty("state").GetString());
        Assert.Equal(3, resumed.RootElement.GetProperty("level").GetInt32());
        var patch = Assert.Single(resumed.RootElement.GetProperty("patches").EnumerateArray());
        Assert.Equal("healthy", patch.GetProperty("bootState").GetString());
        Assert.Equal(A, patch.GetProperty("name").GetString());
    }

    [Fact]
    public async Task A_patch_that_makes_the_kernel_warn_is_reverted_or_kept_as_configured()
    {
        var kernel = await Kernel;
        var files = new List<GuestFile>
        {
            PublicKey(), _inputs.Add("agent.conf", AgentConfig("revert")),
            _inputs.Add("keep.conf", AgentConfig("keep")),
            _inputs.Add("level-1.bundle", Inputs.Sign(_publisher, kernel, A, 1)),
            _inputs.Add("level-2.bundle", Inputs.Sign(_publisher, kernel, Warn, 2)),
            _inputs.Add("level-3.bundle", Inputs.Sign(_publisher, kernel, Warn, 3)),
        };
        var result = await kernel.RunAsync($"""
            {Setup}
            cp /inputs/level-1.bundle {Offline}/ && kintsugi agent run --once || exit 12
            # Something reads /proc/cmdline all the time, so the buggy replacement runs while it settles.
            ( while :; do cat /proc/cmdline > /dev/null; sleep 0.1; done ) > /dev/null 2>&1 &
            reader=$!
            cp /inputs/level-2.bundle {Offline}/
            echo @revert; kintsugi agent run --once 2>&1; echo "@revert-rc=$?"
            echo @reverted-livepatches; ls /sys/kernel/livepatch
            echo @reverted-status; kintsugi status --json
            cp /inputs/keep.conf {Config}
            # Quarantine follows the module, not the bundle: the operator takes it out before trying again.
            kintsugi kernel retry {Warn} > /dev/null 2>&1 || exit 13
            cp /inputs/level-3.bundle {Offline}/
            echo @keep; kintsugi agent run --once 2>&1; echo "@keep-rc=$?"
            echo @kept-livepatches; ls /sys/kernel/livepatch
            echo @kept-status; kintsugi status --json
            kill $reader
            echo @end
            """, files, timeoutSeconds: 420);
        Succeeded(result);
        var output = result.Output;

        Assert.Contains("going back to kintsugi_fixture_cmdline_a (policy revert)", Section(output, "revert"));
        Assert.Equal(A, Section(output, "reverted-livepatches"));
        using (var reverted = JsonDocument.Parse(Section(output, "reverted-status")))
        {
            Assert.Equal("applied-with-bug", reverted.RootElement.GetProperty("state").GetString());
            Assert.Equal(1, reverted.RootElement.GetProperty("level").GetInt32());
            var warn = reverted.RootElement.GetProperty("patches").EnumerateArray()
                .Single(p => p.GetProperty("name").GetString() == Warn);
            Assert.Equal("quarantined", warn.GetProperty("bootState").GetString());
            Assert.False(warn.GetProperty("loaded").GetBoolean());
        }

        Assert.Contains("keeping kintsugi_fixture_cmdline_warn loaded (policy keep)", Section(output, "keep"));
        Assert.Equal(Warn, Section(output, "kept-livepatches"));
        using var kept = JsonDocument.Parse(Section(output, "kept-status"));
        Assert.Equal("applied-with-bug", kept.RootElement.GetProperty("state").GetString());
        Assert.Equal(3, kept.RootElement.GetProperty("level").GetInt32());
        Assert.Contains("kernel problems after load", kept.RootElement.GetProperty("patches").EnumerateArray()
            .Single(p => p.GetProperty("loaded").GetBoolean()).GetProperty("problem").GetString());
    }

    [Fact]
    public async Task Through_a_server_the_agent_enrolls_applies_the_offered_release_reports_and_obeys_a_revoke()
    {
        var kernel = await Kernel;
        var bundle = Inputs.Sign(_publisher, kernel, B, 4);
        var digest = Sha256Digest.Of(bundle);
        var revocation = SignedReleaseMetadata.Create(new ReleaseMetadataDescription(kernel.Kernel.Target, 1, 4, 0, [4],
            DateTimeOffset.UtcNow.AddDays(7)), _publisher);
        // The server offers level 4 until the machine reports it applied; then it says "remove" on its own (refused:
        // nothing signed revokes level 4), and then with the publisher's signed metadata revoking level 4 (obeyed).
        var phase = 0;
        using var server = new FakeServer(anyHost: true);
        server.Handler = r =>
        {
            if (r.PathAndQuery == ProtocolPaths.Enroll)
                return new(201, new EnrollResponse("m_lab", "kmc_lab", 3600, 30));
            if (r.Authorization != "Bearer kmc_lab") return new(401, FakeServer.Problem(401, "unknown credential"));
            if (r.PathAndQuery == ProtocolPaths.Bundle(digest)) return new(200, bundle, "application/octet-stream");
            if (r.PathAndQuery != ProtocolPaths.CheckIn) return new(404);
            var reported = r.Json;
            var response = phase switch
            {
                0 => new CheckInResponse(CheckInAction.Apply,
                    new ReleaseOffer(4, digest, bundle.Length, ProtocolPaths.Bundle(digest)), 3600, 30, 1),
                1 => new CheckInResponse(CheckInAction.Remove, null, 3600, 30, 2),
                _ => new CheckInResponse(CheckInAction.Remove, null, 3600, 30, 3, revocation.Text),
            };
            if (phase == 0 && reported.GetProperty("state").GetString() == "applied"
                && reported.GetProperty("level").ValueKind == JsonValueKind.Number) phase = 1;
            else if (phase == 1
                && reported.GetProperty("detail").GetString()?.Contains("level 4 keeps running") == true) phase = 2;
            return new(200, response);
        };
        var config = $"""
            server = http://10.0.2.2:{server.Port}/
            insecure-http = yes
            token = ket_lab
            trust = /etc/kintsugi/trust
            settle = 1
            """ + "\n";
        var result = await kernel.RunAsync($"""
            {Setup}
            echo @apply; kintsugi agent run --once 2>&1; echo "@apply=$?"
            {Report}
            echo @credential; stat -c %a /var/lib/kintsugi/agent/credential
            echo @bare-remove; kintsugi agent run --once 2>&1; echo "@bare-remove=$?"
            echo @bare-livepatches; ls /sys/kernel/livepatch
            echo @revoke; kintsugi agent run --once 2>&1; echo "@revoke=$?"
            echo @after-livepatches; ls /sys/kernel/livepatch
            echo @after-status; kintsugi status --json
            echo @end
            """, [PublicKey(), _inputs.Add("agent.conf", config)], timeoutSeconds: 420);
        Succeeded(result);
        var output = result.Output;
        Assert.Equal(0, ReturnCode(output, "apply"));
        Assert.Equal(B, Section(output, "livepatches"));
        Assert.Equal(MarkerB, Section(output, "cmdline"));
        Assert.Equal("600", Section(output, "credential"));
        using (var status = JsonDocument.Parse(Section(output, "status")))
        {
            Assert.Equal("applied", status.RootElement.GetProperty("state").GetString());
            Assert.Equal(4, status.RootElement.GetProperty("level").GetInt32());
            Assert.Equal(digest.ToString(), status.RootElement.GetProperty("bundle").GetString());
        }

        var requests = server.Requests;
        Assert.Single(requests, r => r.PathAndQuery == ProtocolPaths.Enroll);
        var enroll = requests.First(r => r.PathAndQuery == ProtocolPaths.Enroll).Json;
        Assert.Equal(kernel.Kernel.Target.BuildId.ToString(),
            enroll.GetProperty("kernel").GetProperty("buildId").GetString());
        Assert.Equal(kernel.Kernel.Target.PackageVersion,
            enroll.GetProperty("kernel").GetProperty("packageVersion").GetString());
        var states = requests.Where(r => r.PathAndQuery == ProtocolPaths.CheckIn)
            .Select(r => r.Json.GetProperty("state").GetString()).ToList();
        // First check: nothing yet; then "applying" and "applied" at once; then the bare remove's check and its
        // refusal; then the signed revoke's check and its report.
        Assert.Equal(["nothing-to-apply", "applying", "applied", "applied", "applied", "applied", "revoked"], states);
        var applied = requests.Where(r => r.PathAndQuery == ProtocolPaths.CheckIn).ElementAt(2).Json;
        Assert.Equal(4, applied.GetProperty("level").GetInt32());
        Assert.Equal(digest.ToString(), applied.GetProperty("bundle").GetString());
        Assert.Equal("99.0.0-kintsugi-fixture", applied.GetProperty("effectiveVersion").GetString());

        Assert.Equal(3, ReturnCode(output, "bare-remove"));
        Assert.Contains("refused, level 4 keeps running", Section(output, "bare-remove"));
        Assert.Equal(B, Section(output, "bare-livepatches"));
        Assert.Equal(0, ReturnCode(output, "revoke"));
        Assert.Contains("revoked: removed kintsugi_fixture_cmdline_b", Section(output, "revoke"));
        Assert.Equal("", Section(output, "after-livepatches"));
        using var after = JsonDocument.Parse(Section(output, "after-status"));
        Assert.Equal("revoked", after.RootElement.GetProperty("state").GetString());
        Assert.Empty(after.RootElement.GetProperty("patches").EnumerateArray());
    }

    /// <summary>A static program that faults from user space: <c>segv</c> (a NULL write) or <c>gpf</c> (a
    /// non-canonical address: the kernel logs a general protection fault for the task).</summary>
    private GuestFile UserFaults()
    {
        File.WriteAllText(_inputs["faults.c"], """
            #include <string.h>
            int main(int argc, char **argv) {
                if (argc > 1 && strcmp(argv[1], "gpf") == 0) *(volatile long *)0x8000000000000000UL = 1;
                *(volatile int *)0 = 1;
                return 0;
            }
            """);
        var compiled = ExternalCommand.Run("gcc", "-static", "-O0", "-o", _inputs["faults"], _inputs["faults.c"]);
        Assert.True(compiled.Succeeded, compiled.StandardError);
        return new GuestFile(_inputs["faults"], "/inputs/faults");
    }

    [Fact]
    public async Task
        A_user_process_named_WARNING_that_segfaults_or_takes_a_general_protection_fault_does_not_quarantine_a_patch()
    {
        var kernel = await Kernel;
        var files = new List<GuestFile>
        {
            PublicKey(), _inputs.Add("agent.conf", AgentConfig().Replace("settle = 1", "settle = 4")),
            _inputs.Add("level-1.bundle", Inputs.Sign(_publisher, kernel, A, 1)), UserFaults(),
        };
        var result = await kernel.RunAsync($"""
            {Setup}
            cp /inputs/faults "/tmp/WARNING:" && chmod +x "/tmp/WARNING:"
            # Any local user can do this: a program named like a kernel report, faulting all through the settle window.
            ( while :; do "/tmp/WARNING:" segv; "/tmp/WARNING:" gpf; sleep 0.2; done ) > /dev/null 2>&1 &
            faults=$!
            sleep 1
            cp /inputs/level-1.bundle {Offline}/
            echo @apply; kintsugi agent run --once 2>&1; echo "@apply-rc=$?"
            kill $faults
            echo @user-lines; dmesg | grep -E "WARNING:\[[0-9]+\]" | head -n 40
            {Report}
            """, files, timeoutSeconds: 420);
        Succeeded(result);
        var output = result.Output;
        var context = $"{output}\n--- console\n{result.Console}";
        // The user lines were in the kernel log while the patch settled...
        Assert.True(Section(output, "user-lines").Contains("segfault at 0"), context);
        Assert.True(Section(output, "user-lines").Contains("general protection fault"), context);
        // ...and the patch was confirmed, not quarantined.
        Assert.True(ReturnCode(output, "apply-rc") == 0, context);
        Assert.True(Section(output, "livepatches") == A, context);
        using var status = JsonDocument.Parse(Section(output, "status"));
        Assert.True(status.RootElement.GetProperty("state").GetString() == "applied", context);
        var patch = Assert.Single(status.RootElement.GetProperty("patches").EnumerateArray());
        Assert.True(patch.GetProperty("bootState").GetString() == "healthy", context);
    }

    [Fact]
    public async Task A_patch_whose_publisher_key_was_retired_since_is_not_loaded_at_the_next_boot()
    {
        var kernel = await Kernel;
        var files = new List<GuestFile> { PublicKey(), _inputs.Add("agent.conf", AgentConfig()),
            _inputs.Add("level-1.bundle", Inputs.Sign(_publisher, kernel, A, 1)) };
        using var disk = new TemporaryDirectory();
        var diskPath = disk["machine.img"];
        var first = await kernel.RunAsync($"""
            {Setup}
            kintsugi agent install --config {Config} || exit 11
            cp /inputs/level-1.bundle {Offline}/ && sync
            kintsugi agent run --once || exit 12
            {Report}
            rm {Offline}/*
            kintsugi keys retire /inputs/publisher.pub --trust /etc/kintsugi/trust || exit 13
            sync
            """, files, diskPath, timeoutSeconds: 420);
        Succeeded(first);
        Assert.Equal(A, Section(first.Output, "livepatches"));

        var boot = await kernel.RunAsync($"""
            tries=0
            until grep -q "kintsugi-agent: state" /run/{AgentUnit.Name}.log 2>/dev/null; do
              tries=$((tries + 1)); [ $tries -gt 300 ] && break; sleep 0.2
            done
            echo @agent; cat /run/{AgentUnit.Name}.log
            {Report}
            """, files, diskPath, timeoutSeconds: 420);
        var context = $"{boot.Output}\n--- console\n{boot.Console}";
        Succeeded(boot);
        Assert.True(Section(boot.Output, "livepatches") == "", context);
        Assert.True(Section(boot.Output, "cmdline") != MarkerA, context);
        Assert.True(Section(boot.Output, "agent").Contains("which is retired"), context);
        using var status = JsonDocument.Parse(Section(boot.Output, "status"));
        Assert.True(!status.RootElement.GetProperty("patches").EnumerateArray().Any(), context);
    }

    /// <summary>Waits for <paramref name="text"/> in <paramref name="log"/>, then cuts the power (sysrq b: no sync, no
    /// unmount).</summary>
    private static string CutThePowerWhen(string log, string text) => $"""
        tries=0
        until grep -q "{text}" {log} 2>/dev/null; do
          tries=$((tries + 1)); [ $tries -gt 1200 ] && break; sleep 0.1
        done
        echo @settling; ls /sys/kernel/livepatch
        echo @settling-log; cat {log}
        echo @end
        # The output port drains before the cut (without it the log's lines were lost now and then); the settle
        # lasts 10 s, so the power still goes while it runs.
        sleep 1
        echo b > /proc/sysrq-trigger
        sleep 10
        """;

    /// <summary>
    /// The power cut while a patch settles, not while the agent is killed: first during an apply's settle (the new
    /// level was never confirmed healthy, so the next boot quarantines it and the previous level runs), then during
    /// the boot's settle of that previous level, which ran healthy before (one unconfirmed boot is as likely a power
    /// loss as a crash it caused: the next boot loads it again and confirms it). Nothing installed is lost.
    /// </summary>
    [Fact]
    public async Task
        A_power_cut_while_a_patch_settles_keeps_the_last_healthy_level_and_quarantines_only_the_unconfirmed_one()
    {
        var kernel = await Kernel;
        var levelOne = Inputs.Sign(_publisher, kernel, A, 1);
        var files = new List<GuestFile>
        {
            PublicKey(), _inputs.Add("agent.conf", AgentConfig()),
                _inputs.Add("slow.conf", AgentConfig().Replace("settle = 1", "settle = 10")),
            _inputs.Add("level-1.bundle", levelOne),
            _inputs.Add("level-2.bundle", Inputs.Sign(_publisher, kernel, B, 2)),
        };
        using var disk = new TemporaryDirectory();
        var diskPath = disk["machine.img"];
        const string BootLog = $"/run/{AgentUnit.Name}.log";

        var first = await kernel.RunAsync($"""
            {Setup}
            kintsugi agent install --config {Config} || exit 11
            cp /inputs/level-1.bundle {Offline}/ && sync
            kintsugi agent run --once || exit 12
            cp /inputs/slow.conf {Config}
            cp /inputs/level-2.bundle {Offline}/ && sync
            kintsugi agent run --once > /run/apply.log 2>&1 &
            {CutThePowerWhen("/run/apply.log", "checking the kernel's health for")}
            """, files, diskPath, timeoutSeconds: 420);
        var context = $"{first.Output}\n--- console\n{first.Console}";
        Assert.True(first.ExitCode is null, $"the guest should have lost power: {first.Describe()}\n{context}");
        Assert.True(Section(first.Output, "settling") == B, context);

        // At boot the unconfirmed level 2 is quarantined and level 1 is loaded again; the power goes while it settles.
        var second = await kernel.RunAsync(CutThePowerWhen(BootLog, "confirming health after"), files, diskPath,
            timeoutSeconds: 420);
        context = $"{second.Output}\n--- console\n{second.Console}";
        Assert.True(second.ExitCode is null, $"the guest should have lost power: {second.Describe()}\n{context}");
        Assert.True(Section(second.Output, "settling") == A, context);
        Assert.True(Section(second.Output, "settling-log").Contains("crash or reboot before it was confirmed healthy"),
            context);

        var third = await kernel.RunAsync($"""
            tries=0
            until grep -q "kintsugi-agent: state" {BootLog} 2>/dev/null; do
              tries=$((tries + 1)); [ $tries -gt 600 ] && break; sleep 0.2
            done
            echo @agent; cat {BootLog}
            {Report}
            """, files, diskPath, timeoutSeconds: 420);
        context = $"{third.Output}\n--- console\n{third.Console}";
        Succeeded(third);
        var agent = Section(third.Output, "agent");
        Assert.True(agent.Contains("it ran healthy before, so it is loaded again (unconfirmed boot 1 of 2 allowed)"),
            context);
        Assert.True(agent.Contains("all loaded patches confirmed healthy"), context);
        Assert.True(Section(third.Output, "livepatches") == A, context);
        Assert.True(Section(third.Output, "cmdline") == MarkerA, context);
        using var status = JsonDocument.Parse(Section(third.Output, "status"));
        var root = status.RootElement;
        Assert.True(Level(root) == 1, context);
        var patches = root.GetProperty("patches").EnumerateArray().ToList();
        var running = Assert.Single(patches, p => p.GetProperty("loaded").GetBoolean());
        Assert.True(running.GetProperty("name").GetString() == A && Level(running) == 1, context);
        Assert.True(running.GetProperty("bootState").GetString() == "healthy", context);
        Assert.True(root.GetProperty("bundle").GetString() == Sha256Digest.Of(levelOne).ToString(), context);
        var unconfirmed = Assert.Single(patches, p => !p.GetProperty("loaded").GetBoolean());
        Assert.True(unconfirmed.GetProperty("name").GetString() == B && Level(unconfirmed) == 2, context);
        Assert.True(unconfirmed.GetProperty("bootState").GetString() == "quarantined", context);
    }

    /// <summary>
    /// Kills the agent (SIGKILL, through the documented test hook) right after each step of an apply, then
    /// cuts the power (sysrq b: no sync, no unmount), and boots again from the same disk, where the agent's
    /// unit re-applies at boot and finishes or undoes the interrupted apply. Each boot checks the state and
    /// starts the next interrupted apply, so eight boots cover the seven steps.
    /// </summary>
    [Fact]
    public async Task Killing_the_agent_after_any_apply_step_and_cutting_the_power_leaves_a_known_state()
    {
        var kernel = await Kernel;
        ApplyStep[] steps = [ApplyStep.Fetched, ApplyStep.Staged, ApplyStep.Pending, ApplyStep.Loaded,
            ApplyStep.Checked, ApplyStep.Confirmed, ApplyStep.Committed];
        var files = new List<GuestFile> { PublicKey(), _inputs.Add("agent.conf", AgentConfig()),
            _inputs.Add("level-1.bundle", Inputs.Sign(_publisher, kernel, A, 1)) };

        // What each interrupted apply must leave after the reboot: before the load, the agent simply applies
        // it again; after the load but before it is confirmed, the crash-loop guard quarantines it and the
        // previous level runs; once confirmed, the new level runs.
        var expected = new List<(ApplyStep Step, int Level, string Module, int? Quarantined, string State)>();
        var (level, module) = (1, A);
        for (var i = 0; i < steps.Length; i++)
        {
            var next = i + 2;
            var nextModule = module == A ? B : A;
            files.Add(_inputs.Add($"level-{next}.bundle", Inputs.Sign(_publisher, kernel, nextModule, next)));
            if (steps[i] is ApplyStep.Pending or ApplyStep.Loaded or ApplyStep.Checked)
                expected.Add((steps[i], level, module, next, "apply-failed"));
            else
            {
                (level, module) = (next, nextModule);
                expected.Add((steps[i], level, module, null, "applied"));
            }
        }

        // Quarantine follows the module and the levels alternate two modules: the operator takes a quarantined
        // one out before the next level carries it again, so each interruption reaches its step.
        string Interrupt(int index) => $"""
            kintsugi kernel retry {A} > /dev/null 2>&1; kintsugi kernel retry {B} > /dev/null 2>&1
            cp /inputs/level-{index + 2}.bundle {Offline}/ && sync
            {FaultInjection.EnvironmentVariable}={steps[index].WireName()} kintsugi agent run --once; echo "@killed=$?"
            sleep 0.5
            echo b > /proc/sysrq-trigger
            sleep 10
            """;

        using var disk = new TemporaryDirectory();
        var diskPath = disk["machine.img"];
        var first = await kernel.RunAsync($"""
            {Setup}
            kintsugi agent install --config {Config} || exit 11
            cp /inputs/level-1.bundle {Offline}/ && sync
            kintsugi agent run --once || exit 12
            {Interrupt(0)}
            """, files, diskPath, timeoutSeconds: 420);
        Assert.True(first.ExitCode is null, $"the guest should have lost power: {first.Describe()}\n{first.Output}");
        Assert.Contains("@killed=137", first.Output);

        for (var i = 0; i < steps.Length; i++)
        {
            var boot = await kernel.RunAsync($"""
                tries=0
                until grep -q "kintsugi-agent: state" /run/{AgentUnit.Name}.log; do
                  tries=$((tries + 1)); [ $tries -gt 300 ] && break; sleep 0.2
                done
                echo @agent; cat /run/{AgentUnit.Name}.log
                {Report}
                {(i + 1 < steps.Length ? Interrupt(i + 1) : "")}
                """, files, diskPath, timeoutSeconds: 420);
            var (step, expectedLevel, expectedModule, quarantined, state) = expected[i];
            var context =
                $"after a kill at step {step.WireName()} and a power cut:\n{boot.Output}\n--- console\n{boot.Console}";
            if (i + 1 < steps.Length)
            {
                Assert.True(boot.ExitCode is null, $"the guest should have lost power: {boot.Describe()}\n{context}");
                Assert.True(boot.Output.Contains("@killed=137"), context);
            }
            else Assert.True(boot.ExitCode == 0, context);

            Assert.True(Section(boot.Output, "livepatches") == expectedModule, context);
            Assert.True(Section(boot.Output, "cmdline") == Marker(expectedModule), context);
            using var status = JsonDocument.Parse(Section(boot.Output, "status"));
            var root = status.RootElement;
            Assert.True(root.GetProperty("state").GetString() == state, context);
            Assert.True(Level(root) == expectedLevel, context);
            var patches = root.GetProperty("patches").EnumerateArray().ToList();
            // Never a half-applied record: nothing staged or pending is left, the running patch is the one
            // installed record in use, and the only other record is a quarantined level.
            Assert.True(patches.All(p => p.GetProperty("bootState").GetString() is "healthy" or "quarantined"),
                context);
            var running = Assert.Single(patches, p => p.GetProperty("loaded").GetBoolean());
            Assert.True(running.GetProperty("name").GetString() == expectedModule && Level(running) == expectedLevel,
                context);
            Assert.True(running.GetProperty("bootState").GetString() == "healthy", context);
            var others = patches.Where(p => !p.GetProperty("loaded").GetBoolean()).ToList();
            if (quarantined is { } bad)
            {
                Assert.True(others.Any(p => p.GetProperty("bootState").GetString() == "quarantined" && Level(p) == bad),
                    context);
                Assert.True(Section(boot.Output, "agent").Contains("crash or reboot before it was confirmed healthy"),
                    context);
            }
            else Assert.True(others.All(p => p.GetProperty("bootState").GetString() == "quarantined"), context);
        }
    }
}

[Collection("6.1 cloud kernel")]
public sealed class AgentOn61CloudKernel() : AgentLabSpecification(TestKernels.Debian12Cloud61);

[Collection("6.12 cloud kernel")]
public sealed class AgentOn612CloudKernel() : AgentLabSpecification(TestKernels.Debian12Cloud612);
