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

    /// <summary>A systemd boot under emulation takes about 5 minutes at a load of 50 on two cores, and a first boot
    /// that installs the package and applies both patches more than 20 (docs/benchmarks.md).</summary>
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(45);

    private readonly GuestInputs _inputs = new();
    private readonly PublisherKey _publisher = PublisherKey.Generate();

    public void Dispose()
    {
        _publisher.Dispose();
        _inputs.Dispose();
    }

    /// <summary>Waits (up to a minute) until kintsugi status says the patch is applied and confirmed healthy.</summary>
    private const string WaitHealthy = """
        for i in $(seq 1 120); do kintsugi status --json 2>/dev/null | grep -q '"bootState": *"healthy"' && break; sleep 0.5; done
        """;

    /// <summary>Waits (up to five minutes: the agent's first check-in, apply and settle) until the patch is confirmed
    /// healthy.</summary>
    private const string WaitHealthyLong = """
        for i in $(seq 1 600); do kintsugi status --json 2>/dev/null | grep -q '"bootState": *"healthy"' && break; sleep 0.5; done
        """;

    /// <summary>
    /// The fleet path on one machine: the server installed from its package, the agent package enrolled against it with
    /// one command (which applies the level the server offers), then the agent upgraded to the next package revision
    /// from the server's own signed apt repository with apt, its unit restarted on the new binary.
    /// </summary>
    [SystemdGuestFact]
    public async Task An_agent_enrolled_with_a_packaged_server_upgrades_through_the_server_apt_repository()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        using var disk = await SystemdRootDisk.CreateAsync();
        var files = new List<GuestFile>
        {
            new(packages.Server(1), "/inputs/kintsugi-server.deb"),
            new(packages.Agent(1), "/inputs/kintsugi_1.deb"),
            new(packages.Agent(2), "/inputs/kintsugi_2.deb"),
            _inputs.Add("publisher.pub", System.Text.Encoding.UTF8.GetBytes(_publisher.PublicKey.ExportPem())),
            _inputs.Add("level-1.bundle", FixtureBundles.Level1(kernel, Module, _publisher)),
        };

        var run = await kernel.Lab.RunAsync(new LabRunSpec(kernel.Release, """
            data=/var/lib/kintsugi-server
            # By address, which the server's certificate names (the machine's name: @name-probe below).
            server=127.0.0.1:8443
            dpkg -i /inputs/kintsugi-server.deb > /tmp/dpkg-server.log 2>&1; echo "@dpkg-server=$?"
            echo @server-unit; systemctl show -p Type -p ActiveState -p SubState -p User kintsugi-server.service
            echo @server-log; journalctl -b -o cat -u kintsugi-server.service | tail -20
            export KINTSUGI_SERVER_URL=https://$server KINTSUGI_SERVER_TOKEN_FILE=$data/initial-admin-token KINTSUGI_SERVER_CA=$data/tls/server.crt
            dpkg -i /inputs/kintsugi_1.deb > /tmp/dpkg-agent.log 2>&1; echo "@dpkg-agent=$?"
            # Diagnostic (printed, not asserted): the first request of all, by the machine's name.
            echo @name-probe; getent hosts kintsugi-lab; start=$(date +%s)
            kintsugi server trust list --verbose --url https://kintsugi-lab:8443 2>&1; echo "exit $? after $(($(date +%s) - start)) s"
            systemctl show -p NRestarts -p MainPID -p ActiveState kintsugi-server.service
            journalctl -b -o cat -u kintsugi-server.service | tail -5
            echo @curl; curl -sS --max-time 120 --cacert $data/tls/server.crt -o /dev/null -w '%{http_code} %{time_connect} %{time_appconnect}\n' https://$server/apt/key.asc 2>&1
            echo @operator
            kintsugi server trust add /inputs/publisher.pub 2>&1 || exit 10
            kintsugi server publish /inputs/level-1.bundle 2>&1 || exit 11
            kintsugi server tokens enroll --channel canary > /root/enroll.token || exit 12
            cp $data/tls/server.crt /root/server.crt
            echo @openvex-before; kintsugi status --format openvex
            echo @enroll; kintsugi agent enroll --server https://$server --token-file /root/enroll.token \
                --ca /root/server.crt --trust /inputs/publisher.pub 2>&1; echo "@enroll=$?"
            WAIT_HEALTHY
            echo @livepatches; ls /sys/kernel/livepatch
            echo @openvex-after; kintsugi status --format openvex
            echo @machines; kintsugi server machines --json
            echo @agent-before; systemctl show -p ActiveState -p MainPID kintsugi-agent.service
            # The next revision of the agent package, published to the server's apt repository by an operator.
            curl -fsS --cacert $data/tls/server.crt -H "Authorization: Bearer $(cat $data/initial-admin-token)" \
                -H 'Content-Type: application/octet-stream' --data-binary @/inputs/kintsugi_2.deb \
                https://$server/api/v1/apt/packages > /dev/null 2>/tmp/publish.err; echo "@apt-publish=$?"
            cat /tmp/publish.err
            # The machine uses it as docs/server.md says; the lab has no Debian mirror, so it is the only source.
            rm -f /etc/apt/sources.list
            mkdir -p /etc/apt/keyrings
            curl -fsS --cacert /etc/kintsugi/server-ca.pem -o /etc/apt/keyrings/kintsugi.asc https://$server/apt/key.asc
            echo "deb [signed-by=/etc/apt/keyrings/kintsugi.asc] https://$server/apt stable main" > /etc/apt/sources.list.d/kintsugi.list
            echo 'Acquire::https::127.0.0.1::CaInfo "/etc/kintsugi/server-ca.pem";' > /etc/apt/apt.conf.d/90kintsugi
            echo @apt; apt-get update 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get -y upgrade 2>&1; echo "@apt=$?"
            echo @version; dpkg-query -W -f '${Version}\n' kintsugi
            sleep 2
            echo @agent-after; systemctl show -p ActiveState -p MainPID kintsugi-agent.service
            WAIT_HEALTHY
            echo @status; kintsugi status --json
            echo @journal-err; journalctl -b -o cat -p err -u kintsugi-agent.service -u kintsugi-server.service
            DEBIAN_FRONTEND=noninteractive apt-get -y purge kintsugi > /tmp/purge.log 2>&1; echo "@purge=$?"
            echo @purge-log; tail -5 /tmp/purge.log
            echo @agent-purged; systemctl is-active kintsugi-agent.service
            echo @unit-files-purged; systemctl list-unit-files --no-legend 'kintsugi-agent*' 'kintsugi-kernel*' | wc -l
            echo @etc-purged; ls -A /etc/kintsugi
            echo @state-purged; ls -A /var/lib/kintsugi /usr/bin/kintsugi 2>&1 | grep -c 'No such file'
            echo @livepatches-purged; ls /sys/kernel/livepatch
            echo @end
            """.Replace("WAIT_HEALTHY", WaitHealthyLong), files, TimeSpan.FromMinutes(40), RootDisk: disk.Path,
            MemoryMiB: 2048));
        Succeeded(run);
        var output = run.Output;

        Assert.Equal(0, ReturnCode(output, "dpkg-server"));
        var server = Section(output, "server-unit");
        Assert.Contains("Type=notify", server);
        Assert.Contains("ActiveState=active", server);
        Assert.Contains("User=kintsugi-server", server);
        Assert.Equal(0, ReturnCode(output, "dpkg-agent"));
        Assert.Equal(0, ReturnCode(output, "enroll"));
        Assert.Equal(Module, Section(output, "livepatches"));
        // What a scanner reads changes with the patch: nothing claimed before, the level's CVE fixed after.
        Assert.Empty(OpenVexStatements(Section(output, "openvex-before")));
        Assert.Equal(["CVE-2024-1086 fixed"], OpenVexStatements(Section(output, "openvex-after")));
        using (var machines = JsonDocument.Parse(Section(output, "machines")))
        {
            var machine = Assert.Single(machines.RootElement.EnumerateArray());
            Assert.Equal("canary", machine.GetProperty("channel").GetString());
        }

        Assert.Equal(0, ReturnCode(output, "apt-publish"));
        Assert.Equal(0, ReturnCode(output, "apt"));
        Assert.Contains("kintsugi", Section(output, "apt"));
        Assert.Equal($"{DebianPackages.Version}-2", Section(output, "version"));
        // The package's postinst restarted the running agent on the new binary.
        var before = Section(output, "agent-before");
        var after = Section(output, "agent-after");
        Assert.Contains("ActiveState=active", after);
        Assert.NotEqual(Regex.Match(before, "MainPID=\\d+").Value, Regex.Match(after, "MainPID=\\d+").Value);
        using (var status = JsonDocument.Parse(Section(output, "status")))
            Assert.Equal("applied", status.RootElement.GetProperty("state").GetString());
        Assert.Equal("", Section(output, "journal-err"));

        // Purged under systemd: the agent stopped, its units, configuration, enrollment and state gone (the server
        // package's server.conf stays); the loaded livepatch stays, as removing a program never changes the kernel.
        Assert.True(ReturnCode(output, "purge") == 0, Section(output, "purge-log"));
        Assert.Equal("inactive", Section(output, "agent-purged"));
        Assert.Equal("0", Section(output, "unit-files-purged"));
        Assert.Equal("server.conf", Section(output, "etc-purged"));
        Assert.Equal("2", Section(output, "state-purged"));
        Assert.Equal(Module, Section(output, "livepatches-purged"));
    }

    /// <summary>Each statement of an OpenVEX document as "CVE status"; the document must be valid OpenVEX.</summary>
    private static List<string> OpenVexStatements(string text)
    {
        using var document = JsonDocument.Parse(text);
        Assert.Empty(OpenVexRules.Problems(document.RootElement));
        return [.. document.RootElement.GetProperty("statements").EnumerateArray().Select(s =>
            $"{s.GetProperty("vulnerability").GetProperty("name").GetString()} {s.GetProperty("status").GetString()}")];
    }

    /// <summary>The agent unit's capability bounding set (packaging/systemd/kintsugi-agent.service): CAP_DAC_OVERRIDE,
    /// CAP_KILL, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYSLOG and CAP_CHECKPOINT_RESTORE, as /proc/PID/status shows
    /// it.</summary>
    private const string AgentCapabilities = "0000010400090022";

    /// <summary>A user-space patch of the loop program's compute(), signed by the test's publisher.</summary>
    private byte[] SignedLoopFix(LoopProgram loop)
    {
        var (patch, bytes) = loop.Patch("loop-fix");
        return Bundle.Create(bytes, new BundleDescription
        {
            Object = new ObjectTarget(patch.Target.Object, patch.Target.BuildId),
            CumulativeLevel = 1,
            Fixes = [new BundleFix("loop-fix-1", [new CveReference(CveId.Parse("CVE-2099-41001"), CveSeverity.High,
            new DateOnly(2099, 1, 2))], "compute() returns the fixed value")],
            PatchedFunctions = [new PatchedFunction(patch.Target.Object, "compute")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        }, _publisher).ToArray();
    }

    /// <summary>
    /// The package's units under systemd, sandboxed (docs/decisions/agent-sandbox.md): the agent applies a kernel patch
    /// and, in a process of another user (nobody), a user-space patch (ptrace, its /proc/PID/mem and map_files); the
    /// next boot's kernel unit re-applies the kernel patch; a configuration error fails the agent once.
    /// </summary>
    [SystemdGuestFact]
    public async Task The_package_runs_its_units_under_systemd_and_the_next_boot_reapplies_the_patch()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        using var disk = await SystemdRootDisk.CreateAsync();
        using var loop = new LoopProgram(_inputs["loop"]);
        var config = "offline-directory = /var/lib/kintsugi/offline\ntrust = /etc/kintsugi/trust\ncheck-interval = " +
            "1h\nsettle = 1\n";
        var files = new List<GuestFile>
        {
            new(packages.Agent(1), "/inputs/kintsugi.deb"),
            _inputs.Add("publisher.pub", System.Text.Encoding.UTF8.GetBytes(_publisher.PublicKey.ExportPem())),
            _inputs.Add("agent.conf", System.Text.Encoding.UTF8.GetBytes(config)),
            _inputs.Add("level-1.bundle", FixtureBundles.Level1(kernel, Module, _publisher)),
            _inputs.Add("loop-fix.bundle", SignedLoopFix(loop)),
            new(loop.Program, "/inputs/loop"),
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
            cp /inputs/level-1.bundle /inputs/loop-fix.bundle /var/lib/kintsugi/offline/
            # A service of another user, which the agent patches through ptrace and /proc.
            install -m 0755 /inputs/loop /usr/local/bin/kintsugi-loop
            setpriv --reuid=65534 --regid=65534 --clear-groups /usr/local/bin/kintsugi-loop 4 > /tmp/loop.out 2>&1 &
            loop=$!
            echo @enable-output; systemctl enable --now kintsugi-agent.service 2>&1; echo "@enable=$?"
            echo @agent; systemctl show -p Type -p ActiveState -p SubState -p WatchdogUSec -p StatusText kintsugi-agent.service
            echo @agent-capabilities; grep CapBnd /proc/$(systemctl show -p MainPID --value kintsugi-agent.service)/status | cut -f2
            WAIT_HEALTHY
            echo @livepatches; ls /sys/kernel/livepatch
            echo @cmdline; cat /proc/cmdline
            for i in $(seq 1 240); do kintsugi user list --pid $loop --json 2>/dev/null | grep -q '"pid"' && break; sleep 0.5; done
            echo @loop-pid; echo $loop
            echo @loop-user; stat -c %U /proc/$loop
            echo @user-patches; kintsugi user list --pid $loop --json
            echo @loop-output; cat /tmp/loop.out
            echo @agent-journal; journalctl -b -o cat -u kintsugi-agent.service | tail -30
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
        Assert.Equal(AgentCapabilities, Section(output, "agent-capabilities"));
        Assert.Equal(Module, Section(output, "livepatches"));
        Assert.Equal(Marker, Section(output, "cmdline"));
        // The sandboxed agent patched the process of user nobody, which runs on.
        var loopPid = int.Parse(Section(output, "loop-pid"));
        Assert.Equal("nobody", Section(output, "loop-user"));
        using (var patches = JsonDocument.Parse(Section(output, "user-patches")))
        {
            var patch = Assert.Single(patches.RootElement.EnumerateArray());
            Assert.Equal("loop-fix", patch.GetProperty("name").GetString());
            Assert.Equal(1, patch.GetProperty("level").GetInt32());
            Assert.Equal(loopPid, Assert.Single(patch.GetProperty("processes").EnumerateArray()).GetProperty("pid")
                .GetInt32());
        }
        Assert.DoesNotContain("wrong result", Section(output, "loop-output"));

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
