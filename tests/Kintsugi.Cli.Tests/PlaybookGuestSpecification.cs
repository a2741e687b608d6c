using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Kintsugi.Bundles;
using Kintsugi.Lab;
using Kintsugi.Testing;
using Xunit.Abstractions;
using static Kintsugi.Testing.GuestOutput;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// The deployment playbook (docs/deploy/kintsugi-agent.yml) as an administrator runs it: ansible-playbook on this host,
/// the controller, over SSH against lab machines (Debian 12 root disks with systemd and sshd, reached through QEMU's
/// port forwarding), each installing the kintsugi package from the packaged server's apt repository and enrolling
/// with it. The server is the kintsugi-server package's own binary, unpacked and run on the host, which guests reach
/// as 10.0.2.2 (its generated certificate names that address).
/// </summary>
[Collection(DebianPackages.Collection)]
public sealed class PlaybookGuestSpecification(DebianPackages packages, ITestOutputHelper log) : IDisposable
{
    private const string Module = "kintsugi_fixture_cmdline_a";

    /// <summary>Lab machines the playbook manages at once (the issue's check: three).</summary>
    private static readonly int Machines =
        int.TryParse(Environment.GetEnvironmentVariable("KINTSUGI_PLAYBOOK_MACHINES"), out var n) && n > 0 ? n : 3;

    /// <summary>Several systemd guests under emulation share two cores: a boot alone can take 10 minutes.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(100);

    private readonly TemporaryDirectory _dir = new();
    private readonly PublisherKey _publisher = PublisherKey.Generate();
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public void Dispose()
    {
        _publisher.Dispose();
        _dir.Dispose();
    }

    /// <summary>To the test's output, and as it happens to $KINTSUGI_TEST_PROGRESS (a file) when set: the run is long.
    /// </summary>
    private void Progress(string message)
    {
        var line = $"[{_clock.Elapsed:hh\\:mm\\:ss}] {message}";
        log.WriteLine(line);
        if (Environment.GetEnvironmentVariable("KINTSUGI_TEST_PROGRESS") is { Length: > 0 } file)
            File.AppendAllText(file, line + "\n");
    }

    [SystemdGuestFact]
    public async Task The_playbook_over_ssh_installs_the_agent_from_the_server_apt_repository_and_enrolls_each_machine()
    {
        using var cancel = new CancellationTokenSource(Bound);
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        var cli = Unpack(packages.Agent(1), "agent", "usr/bin/kintsugi");
        await using var server = await ServerProcess.StartPackagedAsync(Unpack(packages.Server(1), "server",
            "usr/bin/kintsugi-server"), _dir["server-data"]);
        var (publisherKey, token) = await OperatorPreparesAsync(server, cli, kernel, Machines);
        var tokenFile = Write("enroll.token", Encoding.UTF8.GetBytes(token + "\n"));

        await Run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "kintsugi-lab-controller", "-f", _dir["id"]]);
        var guests = new List<Guest>();
        try
        {
            for (var i = 1; i <= Machines; i++) guests.Add(await BootAsync(kernel, i, cancel.Token));
            foreach (var guest in guests) await guest.WaitReadyAsync(SshRaw, cancel.Token);
            Progress("every machine answers over SSH");

            var inventory = Write("inventory", Encoding.UTF8.GetBytes(Inventory(guests)));
            var first = await Playbook(inventory, server, tokenFile, publisherKey, cancel.Token);
            Progress("first playbook run:\n" + first);
            var second = await Playbook(inventory, server, tokenFile, publisherKey, cancel.Token);
            Progress("second playbook run:\n" + second);

            foreach (var guest in guests)
            {
                // The first run changed every machine; the second found everything in place (the enrollment is
                // skipped, as the machine's credential exists).
                Assert.Matches($@"(?m)^{guest.Name}\s+: ok=\d+\s+changed=[1-9]\d*\s+unreachable=0\s+failed=0", first);
                Assert.Matches($@"(?m)^{guest.Name}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", second);
                var state = await Ssh(guest, MachineState, cancel.Token);
                Progress($"{guest.Name}:\n{state}");
                AssertPatched(state);
            }

            // The server knows each machine once, in the token's channel.
            using var machines = JsonDocument.Parse(await Operator(server, cli, "machines", "--json"));
            var fleet = machines.RootElement.EnumerateArray().ToList();
            Assert.Equal(Machines, fleet.Count);
            Assert.All(fleet, m => Assert.Equal("canary", m.GetProperty("channel").GetString()));

            foreach (var guest in guests) await Ssh(guest, "touch /run/kintsugi-lab-stop", cancel.Token);
            foreach (var guest in guests)
            {
                var result = await guest.Run;
                Assert.True(result.ExitCode == 0, $"{guest.Name}: {result.Describe()}\n{result.Output}");
                Assert.Equal("", Section(result.Output, "journal-err"));
            }
        }
        finally
        {
            await cancel.CancelAsync();
            foreach (var guest in guests) guest.Dispose();
        }
    }

    /// <summary>
    /// The cloud-init snippet (docs/deploy/cloud-init.yaml) with its placeholders filled in as its header says, given
    /// to Debian's cloud-init as a NoCloud seed: at the machine's first boot it installs the package from the server's
    /// apt repository and enrolls, and the agent applies the offered patch.
    /// </summary>
    [SystemdGuestFact]
    public async Task The_cloud_init_snippet_installs_the_agent_from_the_server_apt_repository_and_enrolls_at_boot()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        var cli = Unpack(packages.Agent(1), "agent", "usr/bin/kintsugi");
        await using var server = await ServerProcess.StartPackagedAsync(Unpack(packages.Server(1), "server",
            "usr/bin/kintsugi-server"), _dir["server-data"]);
        var (publisherKey, token) = await OperatorPreparesAsync(server, cli, kernel, 1);
        var userData = CloudInitUserData(server, File.ReadAllText(publisherKey), token);
        using var disk = await SystemdRootDisk.CreateAsync("cloud-init");
        List<GuestFile> files =
        [
            new(Write("user-data", Encoding.UTF8.GetBytes(userData)), "/var/lib/cloud/seed/nocloud/user-data"),
            new(Write("meta-data", "instance-id: kintsugi-lab-cloud\nlocal-hostname: kintsugi-cloud\n"u8.ToArray()),
                "/var/lib/cloud/seed/nocloud/meta-data"),
            new(Write("empty", []), "/etc/apt/sources.list"),
            // The lab's minbase root has no locale data (a cloud image has): cloud-init's locale module would fail.
            // Quoted: cloud-init 22.4's schema types `locale` as a string, and a bare `false`, though it skips the
            // module as well, made every boot log "Invalid cloud-config provided".
            new(Write("locale.cfg", "locale: \"false\"\n"u8.ToArray()),
                "/etc/cloud/cloud.cfg.d/91-kintsugi-lab-locale.cfg"),
        ];
        Progress("booting the cloud-init machine");
        var run = await kernel.Lab.RunAsync(new LabRunSpec(kernel.Release, $"""
            cloud-init status --wait > /dev/null; echo "@cloud-init=$?"
            echo @cloud-init-status; cloud-init status --long
            echo @cloud-init-log; grep -E 'WARNING|ERROR|Traceback' /var/log/cloud-init.log | tail -20
            echo @cloud-config-problems; grep -E '(Invalid|Deprecated) cloud-config' /var/log/cloud-init.log
            echo @user-data-schema; cloud-init schema --system 2>&1
            tail -20 /var/log/cloud-init-output.log
            {MachineState}
            echo @journal-err; journalctl -b -o cat -p err -u kintsugi-agent.service
            echo @end
            """, files, Bound, RootDisk: disk.Path, MemoryMiB: 1536));
        Progress($"cloud-init machine: {run.Describe()}\n{run.Output}");
        Succeeded(run);
        Assert.Matches("(?m)^@cloud-init=0$", run.Output);
        Assert.Contains("status: done", Section(run.Output, "cloud-init-status"));
        // The snippet is valid cloud-config for Debian 12's cloud-init, and so is the lab's configuration merged with
        // it: cloud-init validates the merged configuration at boot and logs what its schema refuses.
        Assert.Equal("Valid cloud-config: system userdata", Section(run.Output, "user-data-schema"));
        Assert.Equal("", Section(run.Output, "cloud-config-problems"));
        AssertPatched(run.Output);
        Assert.Equal("", Section(run.Output, "journal-err"));
        using var machines = JsonDocument.Parse(await Operator(server, cli, "machines", "--json"));
        Assert.Equal("canary", Assert.Single(machines.RootElement.EnumerateArray()).GetProperty("channel").GetString());
    }

    /// <summary>docs/deploy/cloud-init.yaml with the server URL, its certificate, the publisher key and the token put
    /// in place of the placeholders; fails if the snippet no longer has them where the test expects.</summary>
    private static string CloudInitUserData(ServerProcess server, string publisherKey, string token)
    {
        var text = File.ReadAllText(Path.Combine(Repository.Root, "docs", "deploy", "cloud-init.yaml"));
        string Replace(string input, string pattern, string replacement)
        {
            var output = Regex.Replace(input, pattern, _ => replacement);
            Assert.True(output != input, $"docs/deploy/cloud-init.yaml has no {pattern}");
            return output;
        }
        static string Indented(string pem) =>
            string.Join("\n", pem.Trim().Split('\n').Select(l => "      " + l.TrimEnd('\r')));
        text = Replace(text, @"(?s)      -----BEGIN CERTIFICATE-----\n.*?\n      -----END CERTIFICATE-----",
            Indented(File.ReadAllText(server.Certificate)));
        text = Replace(text, @"(?s)      -----BEGIN PUBLIC KEY-----\n.*?\n      -----END PUBLIC KEY-----",
            Indented(publisherKey));
        text = Replace(text, "ket_REPLACE_WITH_AN_ENROLLMENT_TOKEN", token);
        text = Replace(text, "https://patches.example.net:8443", server.GuestUrl);
        return Replace(text, "patches.example.net", "10.0.2.2");
    }

    /// <summary>The operator's side: trust the publisher, publish level 1, one enrollment token for the machines, and
    /// the agent package into the server's apt repository.</summary>
    private async Task<(string PublisherKey, string Token)> OperatorPreparesAsync(ServerProcess server, string cli,
        KernelUnderTest kernel, int machines)
    {
        Progress($"server {server.Url} ready (guests: {server.GuestUrl})");
        var publisherKey = Write("publisher.pub", Encoding.UTF8.GetBytes(_publisher.PublicKey.ExportPem()));
        await Operator(server, cli, "trust", "add", publisherKey);
        await Operator(server, cli, "publish",
            Write("level-1.bundle", FixtureBundles.Level1(kernel, Module, _publisher)));
        var token = (await Operator(server, cli, "tokens", "enroll", "--channel", "canary", "--max-uses",
            machines.ToString(System.Globalization.CultureInfo.InvariantCulture))).Trim();
        await Run("curl", ["-fsS", "--cacert", server.Certificate, "-H", $"Authorization: Bearer {server.AdminToken}",
            "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + packages.Agent(1), "-o", "/dev/null",
            server.Url + "/api/v1/apt/packages"]);
        return (publisherKey, token);
    }

    /// <summary>What the test reads on a machine once the agent is in place: package version and source, the loaded
    /// livepatch, the unit and the agent's status.</summary>
    private const string MachineState = """
        for i in $(seq 1 600); do
            kintsugi status --json 2>/dev/null | grep -q '"bootState": *"healthy"' && break; sleep 0.5
        done
        echo @version; dpkg-query -W -f '${Version}\n' kintsugi
        echo @source; apt-cache policy kintsugi | grep -c 10.0.2.2
        echo @livepatches; ls /sys/kernel/livepatch
        echo @unit; systemctl is-enabled kintsugi-agent.service; systemctl is-active kintsugi-agent.service
        echo @status; kintsugi status --json
        """;

    private static void AssertPatched(string state)
    {
        Assert.Equal($"{DebianPackages.Version}-1", Section(state, "version"));
        Assert.NotEqual("0", Section(state, "source"));
        Assert.Equal(Module, Section(state, "livepatches"));
        Assert.Equal("enabled\nactive", Section(state, "unit"));
        using var status = JsonDocument.Parse(Section(state, "status"));
        Assert.Equal("applied", status.RootElement.GetProperty("state").GetString());
        Assert.Equal(1, status.RootElement.GetProperty("level").GetInt32());
    }

    /// <summary>One lab machine: its own copy of the root disk, its own name and machine id (the server tells machines
    /// apart by it), the controller's key for root, no Debian mirror (the server's repository is its only source), and
    /// a command that keeps it running until the controller says stop.</summary>
    private async Task<Guest> BootAsync(KernelUnderTest kernel, int index, CancellationToken cancellation)
    {
        var name = $"lab{index}";
        var disk = await SystemdRootDisk.CreateAsync();
        var sshPort = Ports.Free();
        List<GuestFile> files =
        [
            new(_dir["id.pub"], "/root/.ssh/authorized_keys"),
            new(Write($"{name}.hostname", Encoding.UTF8.GetBytes($"kintsugi-{name}\n")), "/etc/hostname"),
            new(Write($"{name}.hosts", Encoding.UTF8.GetBytes(
                $"127.0.0.1 localhost\n127.0.1.1 kintsugi-{name}\n")), "/etc/hosts"),
            new(Write($"{name}.machine-id", Encoding.UTF8.GetBytes(Guid.NewGuid().ToString("N") + "\n")),
                "/etc/machine-id"),
            new(Write("empty", []), "/etc/apt/sources.list"),
        ];
        var run = kernel.Lab.RunAsync(new LabRunSpec(kernel.Release, """
            touch /run/kintsugi-lab-ready
            while [ ! -e /run/kintsugi-lab-stop ]; do sleep 2; done
            echo @journal-err; journalctl -b -o cat -p err -u kintsugi-agent.service
            echo @end
            """, files, Bound, RootDisk: disk.Path, MemoryMiB: 1536, Cpus: 1,
            ForwardedPorts: [new PortForward(sshPort, 22)]), cancellation: cancellation);
        Progress($"{name} booting (ssh on 127.0.0.1:{sshPort})");
        return new Guest(name, sshPort, run, disk);
    }

    private string Inventory(IEnumerable<Guest> guests) =>
        "[fleet]\n" + string.Concat(guests.Select(g => $"{g.Name} ansible_host=127.0.0.1 ansible_port={g.SshPort}\n")) +
        $"""
        [fleet:vars]
        ansible_user=root
        ansible_ssh_private_key_file={_dir["id"]}
        ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'
        ansible_python_interpreter=/usr/bin/python3

        """;

    private async Task<string> Playbook(string inventory, ServerProcess server, string tokenFile, string publisherKey,
        CancellationToken cancellation)
    {
        var result = await ExternalCommand.RunAsync("ansible-playbook",
        [
            "-i", inventory, Path.Combine(Repository.Root, "docs", "deploy", "kintsugi-agent.yml"),
            "-e", $"kintsugi_server={server.GuestUrl}", "-e", $"kintsugi_token_file={tokenFile}",
            "-e", $"kintsugi_ca_file={server.Certificate}", "-e", $"kintsugi_publisher_key={publisherKey}",
            "-e", $"kintsugi_apt_repository={server.GuestUrl}/apt",
        ], environment: new Dictionary<string, string>
        {
            ["ANSIBLE_NOCOLOR"] = "1",
            ["ANSIBLE_HOST_KEY_CHECKING"] = "False",
            // Under emulation sshd and each module's Python start slowly.
            ["ANSIBLE_TIMEOUT"] = "120",
            ["ANSIBLE_LOCAL_TEMP"] = _dir["ansible-tmp"],
        }, cancellation: cancellation);
        Assert.True(result.Succeeded, $"ansible-playbook exited {result.ExitCode}:\n{result.StandardOutput}\n" +
            result.StandardError);
        return result.StandardOutput;
    }

    private async Task<string> Ssh(Guest guest, string command, CancellationToken cancellation)
    {
        var result = await SshRaw(guest, command, cancellation);
        Assert.True(result.Succeeded, $"ssh {guest.Name} exited {result.ExitCode}: {result.StandardError}\n" +
            result.StandardOutput);
        return result.StandardOutput.Replace("\r", "");
    }

    private Task<CommandResult> SshRaw(Guest guest, string command, CancellationToken cancellation) =>
        ExternalCommand.RunAsync("ssh", ["-i", _dir["id"], "-p", guest.SshPort.ToString(
            System.Globalization.CultureInfo.InvariantCulture), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR", "root@127.0.0.1",
            command], cancellation: cancellation);

    private async Task<string> Operator(ServerProcess server, string cli, params string[] arguments)
    {
        var result = await ExternalCommand.RunAsync(cli, ["server", .. arguments], environment:
            new Dictionary<string, string>
            {
                ["KINTSUGI_SERVER_URL"] = server.Url,
                ["KINTSUGI_SERVER_TOKEN_FILE"] = server.AdminTokenFile,
                ["KINTSUGI_SERVER_CA"] = server.Certificate,
            });
        Assert.True(result.Succeeded, $"kintsugi server {string.Join(' ', arguments)} exited {result.ExitCode}: " +
            result.StandardError);
        return result.StandardOutput;
    }

    private static async Task Run(string file, string[] arguments)
    {
        var result = await ExternalCommand.RunAsync(file, arguments);
        Assert.True(result.Succeeded, $"{file} exited {result.ExitCode}: {result.StandardError}");
    }

    /// <summary>A file of a package, unpacked with dpkg-deb: what the package installs, run from here.</summary>
    private string Unpack(string package, string name, string file)
    {
        var result = ExternalCommand.Run("dpkg-deb", "-x", package, _dir[name]);
        Assert.True(result.Succeeded, $"dpkg-deb -x {package}: {result.StandardError}");
        return Path.Combine(_dir[name], file);
    }

    private string Write(string name, byte[] bytes)
    {
        File.WriteAllBytes(_dir[name], bytes);
        return _dir[name];
    }

    private sealed record Guest(string Name, int SshPort, Task<LabRunResult> Run, SystemdRootDisk Disk) : IDisposable
    {
        /// <summary>Until the machine's lab command has started (systemd reached multi-user, so sshd is up).</summary>
        public async Task WaitReadyAsync(Func<Guest, string, CancellationToken, Task<CommandResult>> ssh,
            CancellationToken cancellation)
        {
            while (true)
            {
                if (Run.IsCompleted)
                {
                    var result = await Run;
                    Assert.Fail($"{Name} stopped before it was ready: {result.Describe()}\n{result.Console}");
                }
                if ((await ssh(this, "test -e /run/kintsugi-lab-ready", cancellation)).Succeeded) return;
                await Task.Delay(TimeSpan.FromSeconds(10), cancellation);
            }
        }

        public void Dispose() => Disk.Dispose();
    }
}
