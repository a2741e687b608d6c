using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Kintsugi.Testing;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// systemd done right: sd_notify on a real unix datagram socket (what systemd listens on for Type=notify),
/// journald priority prefixes, and the units as the machine writes them.
/// </summary>
public sealed class SystemdSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A socket bound where systemd's would be, as $NOTIFY_SOCKET names it.</summary>
    private Socket Listen(out string path)
    {
        path = _dir["notify"];
        var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(path));
        return socket;
    }

    private static async Task<string> ReceiveAsync(Socket socket, TimeSpan timeout)
    {
        var buffer = new byte[4096];
        using var cancel = new CancellationTokenSource(timeout);
        var length = await socket.ReceiveAsync(buffer, SocketFlags.None, cancel.Token);
        return Encoding.UTF8.GetString(buffer, 0, length);
    }

    [Fact]
    public async Task Ready_status_watchdog_and_stopping_arrive_as_datagrams_on_the_notify_socket()
    {
        using var socket = Listen(out var path);
        var notify =
            new SystemdNotify(new Dictionary<string, string?> { ["NOTIFY_SOCKET"] = path }, Environment.ProcessId);
        notify.Ready("boot re-application done");
        notify.Watchdog();
        notify.Stopping();
        Assert.Equal("READY=1\nSTATUS=boot re-application done", await ReceiveAsync(socket, TimeSpan.FromSeconds(5)));
        Assert.Equal("WATCHDOG=1", await ReceiveAsync(socket, TimeSpan.FromSeconds(5)));
        Assert.Equal("STOPPING=1", await ReceiveAsync(socket, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public void The_watchdog_timeout_is_read_only_for_the_process_systemd_names()
    {
        var env = new Dictionary<string, string?>
        {
            ["NOTIFY_SOCKET"] = "/run/systemd/notify",
            ["WATCHDOG_USEC"] = "300000000",
            ["WATCHDOG_PID"] = "42"
        };
        Assert.Equal(TimeSpan.FromMinutes(5), new SystemdNotify(env, 42).WatchdogTimeout);
        Assert.Null(new SystemdNotify(env, 43).WatchdogTimeout);
        Assert.False(new SystemdNotify(new Dictionary<string, string?>(), 42).Enabled);
    }

    [Fact]
    public async Task The_agent_says_ready_after_boot_re_application_pings_the_watchdog_and_says_stopping_on_sigterm()
    {
        using var machine = new MachineSandbox();
        Directory.CreateDirectory(Path.Combine(machine.Root, "bundles"));
        machine.Put("/etc/kintsugi/agent.conf",
            $"offline-directory = {Path.Combine(machine.Root, "bundles")}\nsettle = 0\n");
        using var socket = Listen(out var path);
        var start = new ProcessStartInfo("unshare") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in machine.CommandLine("agent", "run")) start.ArgumentList.Add(a);
        start.Environment["NOTIFY_SOCKET"] = path;
        start.Environment["WATCHDOG_USEC"] = "1000000";
        using var agent = Process.Start(start)!;
        var stderr = agent.StandardError.ReadToEndAsync();
        try
        {
            var messages = new List<string>();
            while (!messages.Any(m => m.StartsWith("READY=1", StringComparison.Ordinal)))
                messages.Add(await ReceiveAsync(socket, TimeSpan.FromSeconds(60)));
            Assert.Contains("WATCHDOG=1", await ReceiveAsync(socket, TimeSpan.FromSeconds(5))
                + await ReceiveAsync(socket, TimeSpan.FromSeconds(5)));
            // exec kept the agent's pid: SIGTERM reaches it.
            Assert.Equal(0, (await ExternalCommand.RunAsync("kill",
                ["-TERM", agent.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])).ExitCode);
            var last = "";
            while (last != "STOPPING=1") last = await ReceiveAsync(socket, TimeSpan.FromSeconds(30));
            await agent.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
            Assert.True(agent.ExitCode == 0, await stderr);
        }
        finally
        {
            if (!agent.HasExited) agent.Kill(entireProcessTree: true);
        }
    }

    [Theory]
    [InlineData("error: cannot reach the server", JournalLog.Error)]
    [InlineData("level 3 could not be applied: the transition stalled", JournalLog.Error)]
    [InlineData("refused a.bundle: the module was altered", JournalLog.Error)]
    [InlineData("the server is unavailable; retrying in 30 s", JournalLog.Warning)]
    [InlineData("state applied, level 2", JournalLog.Info)]
    public void Agent_lines_carry_the_journal_priority_of_what_they_say(string message, int priority) =>
        Assert.Equal(priority, JournalLog.PriorityOf(message));

    [Fact]
    public void The_priority_prefix_is_written_only_when_standard_error_is_the_journal_stream()
    {
        Assert.Equal("<3>kintsugi: error: x",
            JournalLog.Format(JournalLog.Error, "kintsugi: error: x", toJournal: true));
        Assert.Equal("kintsugi: error: x", JournalLog.Format(JournalLog.Error, "kintsugi: error: x", toJournal: false));
        Assert.True(JournalLog.IsJournalStream("8:1234", "1234"));
        Assert.False(JournalLog.IsJournalStream("8:1234", "999"));
        Assert.False(JournalLog.IsJournalStream(null, "1234"));
    }

    [Fact]
    public async Task
        Agent_install_writes_a_unit_with_a_quoted_stable_exec_start_that_stops_restarting_on_configuration_errors()
    {
        using var machine = new MachineSandbox();
        machine.Put("/etc/kintsugi/agent.conf", "offline-directory = /srv/bundles\n");
        var result = await machine.RunAsync("agent", "install", "--json");
        Assert.True(result.ExitCode == 0, result.StandardError);
        var unit = File.ReadAllText(machine.Written("/etc/systemd/system/kintsugi-agent.service"));
        Assert.Contains($"ExecStart=\"{Repository.KintsugiBinary}\" agent run --config \"/etc/kintsugi/agent.conf\"",
            unit);
        Assert.Contains("Type=notify", unit);
        Assert.Contains("WatchdogSec=", unit);
        Assert.Contains("RestartPreventExitStatus=2 6 7", unit);
        Assert.Contains("StateDirectory=kintsugi", unit);
        Assert.DoesNotContain("@KINTSUGI@", unit);
        Assert.DoesNotContain("kintsugi.invalid", unit);
        var verify = await ExternalCommand.RunAsync("systemd-analyze",
            ["verify", "--man=no", machine.Written("/etc/systemd/system/kintsugi-agent.service")]);
        // The binary and configuration paths exist on this host (the configuration only in the sandbox): only that may
        // be reported.
        Assert.DoesNotContain("Unknown", verify.StandardError);
        Assert.DoesNotContain("Invalid", verify.StandardError);
    }

    /// <summary>
    /// The machine's units keep the sandbox their job allows (docs/decisions/agent-sandbox.md): systemd's own rating,
    /// offline, of the units as packaged. Before the sandbox the agent rated 6.7 and the kernel unit 7.8; a setting
    /// lost makes the rating climb past its ceiling here.
    /// </summary>
    [Theory]
    [InlineData("kintsugi-agent.service", 3.5)]
    [InlineData("kintsugi-kernel.service", 2.1)]
    public async Task Systemd_rates_the_exposure_of_each_machine_unit_no_higher_than_its_sandbox_allows(string name,
        double ceiling)
    {
        var text = File.ReadAllText(Path.Combine(Repository.Root, "packaging", "systemd", name))
            .Replace("@KINTSUGI@", "/usr/bin/kintsugi").Replace("@CONFIG@", "/etc/kintsugi/agent.conf");
        var unit = _dir[name];
        File.WriteAllText(unit, text);
        var security = await ExternalCommand.RunAsync("systemd-analyze",
            ["security", "--offline=true", "--no-pager", unit]);
        var rating = System.Text.RegularExpressions.Regex.Match(security.StandardOutput,
            $@"Overall exposure level for {System.Text.RegularExpressions.Regex.Escape(name)}: (\d+\.\d)");
        Assert.True(rating.Success, security.StandardOutput + security.StandardError);
        Assert.InRange(double.Parse(rating.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), 0,
            ceiling);
    }
}
