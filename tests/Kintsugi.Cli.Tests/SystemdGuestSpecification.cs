using System.Text.Json;
using System.Text.RegularExpressions;
using Kintsugi.Bundles;
using Kintsugi.Lab;
using Kintsugi.Testing;
using static Kintsugi.Testing.GuestOutput;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// The kintsugi package under a real systemd: a lab guest boots the 6.1 cloud kernel into a Debian 12 root disk with
/// systemd as PID 1 (scripts/lab-systemd-root.sh), installs the package with dpkg, configures the agent offline and
/// enables it; the agent's Type=notify unit starts and applies a signed bundle. The next boot of the same disk
/// re-applies the patch from the units alone, and the journal holds the agent's lines at their priorities.
/// </summary>
[Collection(DebianPackages.Collection)]
public sealed class SystemdGuestSpecification(DebianPackages packages) : IDisposable
{
    private const string Module = "kintsugi_fixture_cmdline_a";
    private const string Marker = "kintsugi-fixture-a: live patched";

    /// <summary>A systemd boot under emulation takes about 5 minutes at a load of 50 on two cores
    /// (docs/benchmarks.md).</summary>
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(20);

    private readonly TemporaryDirectory _dir = new();
    private readonly PublisherKey _publisher = PublisherKey.Generate();

    public void Dispose()
    {
        _publisher.Dispose();
        _dir.Dispose();
    }

    private GuestFile Input(string name, byte[] bytes)
    {
        File.WriteAllBytes(_dir[name], bytes);
        return new GuestFile(_dir[name], "/inputs/" + name);
    }

    private byte[] SignedLevel1(KernelUnderTest kernel) =>
        Bundle.Create(File.ReadAllBytes(kernel.Modules[Module]), new BundleDescription
    {
        Target = kernel.Kernel.Target,
        CumulativeLevel = 1,
        Fixes = [new BundleFix("CVE-2024-1086", [new CveReference(CveId.Parse("CVE-2024-1086"), CveSeverity.High,
        new DateOnly(2024, 1, 31))], "netfilter: nf_tables: reject QUEUE/DROP verdict parameters")],
        PatchedFunctions = [new PatchedFunction("vmlinux", "cmdline_proc_show")],
        CreatedAt = DateTimeOffset.UtcNow,
        BuilderVersion = "0.1.0",
    }, _publisher).ToArray();

    private static int ReturnCode(string output, string label)
    {
        var match = Regex.Match(output, $"^@{label}=(\\d+)$", RegexOptions.Multiline);
        Assert.True(match.Success, $"no @{label}= in:\n{output}");
        return int.Parse(match.Groups[1].Value);
    }

    private static void Succeeded(LabRunResult result) =>
        Assert.True(result.ExitCode == 0,
        $"{result.Describe()}\n--- output\n{result.Output}\n--- console\n{result.Console}");

    /// <summary>Waits (up to a minute) until kintsugi status says the patch is applied and confirmed healthy.</summary>
    private const string WaitHealthy = """
        for i in $(seq 1 120); do kintsugi status --json 2>/dev/null | grep -q '"bootState": *"healthy"' && break; sleep 0.5; done
        """;

    [SystemdGuestFact]
    public async Task The_package_runs_its_units_under_systemd_and_the_next_boot_reapplies_the_patch()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        using var disk = await SystemdRootDisk.CreateAsync();
        var config = "offline-directory = /var/lib/kintsugi/offline\ntrust = /etc/kintsugi/trust\ncheck-interval = " +
            "1h\nsettle = 1\n";
        var files = new List<GuestFile>
        {
            new(packages.Agent(1), "/inputs/kintsugi.deb"),
            Input("publisher.pub", System.Text.Encoding.UTF8.GetBytes(_publisher.PublicKey.ExportPem())),
            Input("agent.conf", System.Text.Encoding.UTF8.GetBytes(config)),
            Input("level-1.bundle", SignedLevel1(kernel)),
        };

        var first = await kernel.Lab.RunAsync(new LabRunSpec(kernel.Release, """
            echo @pid1; cat /proc/1/comm
            echo @boot-time; systemd-analyze time
            dpkg -i /inputs/kintsugi.deb > /tmp/dpkg.log 2>&1; echo "@dpkg=$?"
            echo @enabled; systemctl is-enabled kintsugi-kernel.service kintsugi-agent.service 2>&1
            echo @setup
            mkdir -p /var/lib/kintsugi/offline
            kintsugi keys trust /inputs/publisher.pub --trust /etc/kintsugi/trust > /dev/null 2>&1 || exit 10
            cp /inputs/agent.conf /etc/kintsugi/agent.conf
            cp /inputs/level-1.bundle /var/lib/kintsugi/offline/
            echo @enable-output; systemctl enable --now kintsugi-agent.service 2>&1; echo "@enable=$?"
            echo @agent; systemctl show -p Type -p ActiveState -p SubState -p WatchdogUSec -p StatusText kintsugi-agent.service
            WAIT_HEALTHY
            echo @livepatches; ls /sys/kernel/livepatch
            echo @cmdline; cat /proc/cmdline
            echo @end
            """.Replace("WAIT_HEALTHY", WaitHealthy), files, BootTimeout, RootDisk: disk.Path, MemoryMiB: 2048));
        Succeeded(first);
        var output = first.Output;
        Assert.Equal("systemd", Section(output, "pid1"));
        Assert.Equal(0, ReturnCode(output, "dpkg"));
        // Boot re-application is on from the install; the agent waits for its configuration (agent enroll, or here by
        // hand).
        Assert.Equal("enabled\ndisabled", Section(output, "enabled"));
        Assert.Equal(0, ReturnCode(output, "enable"));
        var agent = Section(output, "agent");
        Assert.Contains("Type=notify", agent);
        Assert.Contains("ActiveState=active", agent);
        Assert.Contains("SubState=running", agent);
        Assert.Contains("WatchdogUSec=5min", agent);
        Assert.Equal(Module, Section(output, "livepatches"));
        Assert.Equal(Marker, Section(output, "cmdline"));

        // The same disk boots again: systemd starts the units, which re-apply the installed patch.
        var second = await kernel.Lab.RunAsync(new LabRunSpec(kernel.Release, """
            echo @pid1; cat /proc/1/comm
            WAIT_HEALTHY
            echo @kernel-unit; systemctl show -p ActiveState -p Result -p ExecMainStatus kintsugi-kernel.service
            echo @agent-unit; systemctl show -p ActiveState -p SubState -p Result kintsugi-agent.service
            echo @cmdline; cat /proc/cmdline
            echo @status; kintsugi status --json
            echo @journal; journalctl -b -o cat -u kintsugi-kernel.service -u kintsugi-agent.service
            echo @journal-err; journalctl -b -o cat -p err -u kintsugi-kernel.service -u kintsugi-agent.service
            # A configuration error: the unit fails once (RestartPreventExitStatus) and says why at priority err.
            echo "no-such-key = 1" >> /etc/kintsugi/agent.conf
            echo @restart-output; systemctl restart kintsugi-agent.service 2>&1; echo "@restart=$?"
            sleep 2
            echo @failed-unit; systemctl show -p ActiveState -p Result -p ExecMainStatus -p NRestarts kintsugi-agent.service
            echo @failed-err; journalctl -b -o cat -p err -u kintsugi-agent.service
            echo @end
            """.Replace("WAIT_HEALTHY", WaitHealthy), [], BootTimeout, RootDisk: disk.Path, MemoryMiB: 2048));
        Succeeded(second);
        output = second.Output;
        Assert.Equal("systemd", Section(output, "pid1"));
        var kernelUnit = Section(output, "kernel-unit");
        Assert.Contains("Result=success", kernelUnit);
        Assert.Contains("ExecMainStatus=0", kernelUnit);
        var agentUnit = Section(output, "agent-unit");
        Assert.Contains("ActiveState=active", agentUnit);
        Assert.Contains("SubState=running", agentUnit);
        Assert.Equal(Marker, Section(output, "cmdline"));
        using (var status = JsonDocument.Parse(Section(output, "status")))
        {
            Assert.Equal("applied", status.RootElement.GetProperty("state").GetString());
            var patch = Assert.Single(status.RootElement.GetProperty("patches").EnumerateArray());
            Assert.Equal("healthy", patch.GetProperty("bootState").GetString());
        }
        // The units logged (at info), and nothing of it at priority err or above.
        Assert.NotEqual("", Section(output, "journal"));
        Assert.Equal("", Section(output, "journal-err"));

        Assert.NotEqual(0, ReturnCode(output, "restart"));
        var failed = Section(output, "failed-unit");
        Assert.Contains("ActiveState=failed", failed);
        Assert.Contains("ExecMainStatus=2", failed);
        Assert.Contains("NRestarts=0", failed);
        Assert.Contains("unknown key 'no-such-key'", Section(output, "failed-err"));
    }
}
