using System.CommandLine;
using Kintsugi.Agent;
using Kintsugi.Kernel;

namespace Kintsugi.Cli;

/// <summary>
/// kintsugi agent ...: the machine-side daemon that applies signed bundles meant for this exact kernel.
/// </summary>
internal static class AgentCommands
{
    private static Option<string> ConfigOption() =>
        new("--config")
        { Description = "The agent's configuration file", DefaultValueFactory = _ => AgentConfig.DefaultPath };

    public static Command Create()
    {
        var agent = new Command("agent",
            "The machine agent: re-apply at boot, then fetch, verify, apply and report signed livepatch bundles " +
            "(server or offline directory)");
        agent.Subcommands.Add(Run());
        agent.Subcommands.Add(Install());
        agent.Subcommands.Add(Uninstall());
        agent.Subcommands.Add(Check());
        agent.Subcommands.Add(AgentEnrollCommand.Create());
        return agent;
    }

    private static Command Run()
    {
        var config = ConfigOption();
        var once = new Option<bool>("--once")
        { Description = "One check (boot re-application and recovery first), then exit with its outcome" };
        var command = new Command("run",
            "Run the agent (what kintsugi-agent.service starts): until stopped, or once with --once") { config, once };
        command.WithExamples("kintsugi agent run --once", "kintsugi agent run --config /etc/kintsugi/agent.conf");
        command.Action = Cli.Run(async parse =>
        {
            var settings = AgentConfig.Load(parse.GetValue(config)!);
            var notify = SystemdNotify.FromEnvironment();
            void Log(string message)
            {
                JournalLog.Agent(message);
                if (message.StartsWith("state ", StringComparison.Ordinal)) notify.Status(message);
            }
            var agent = new MachineAgent(settings, MachinePaths.Default, Log);
            if (parse.GetValue(once))
            {
                agent.Start();
                var result = await agent.RunOnceAsync(CancellationToken.None);
                Console.WriteLine($"state {result.State}" + (result.Level is { } level ? $", level {level}" : "")
                    + (result.Detail.Length > 0 ? $": {result.Detail}" : ""));
                return (int)result.ExitCode;
            }
            using var stop = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
            using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(
                System.Runtime.InteropServices.PosixSignal.SIGTERM, context =>
                    { context.Cancel = true; stop.Cancel(); });
            // Type=notify: ready once installed patches are re-applied; the watchdog is pinged while the process runs.
            var watchdog = notify.RunWatchdogAsync(() => true, stop.Token);
            await agent.RunAsync(stop.Token, () => notify.Ready("boot re-application done; checking"));
            notify.Stopping();
            await watchdog;
            return 0;
        });
        return command;
    }

    private static Command Install()
    {
        var config = ConfigOption();
        var json = Cli.Json();
        var command = new Command("install",
            $"Check the configuration, then write and enable {AgentUnit.Name} (the agent also re-applies installed " +
            "patches at boot)") { config, json };
        command.WithExamples("kintsugi agent install",
            "kintsugi agent install --config /etc/kintsugi/agent.conf --json");
        command.Action = Cli.Run(parse =>
        {
            var path = Path.GetFullPath(parse.GetValue(config)!);
            AgentConfig.Load(path);
            var unit = AgentUnit.Install(MachinePaths.Default, SystemdUnit.CurrentCommand(), path);
            // Under systemd: make it see the unit, and start it now (enable --now).
            if (Systemctl.Running)
            {
                Systemctl.DaemonReload();
                Systemctl.EnableNow(AgentUnit.Name);
            }
            if (parse.GetValue(json))
                Cli.WriteJson(new FileChange(true, "installed", AgentUnit.Name, unit), ChangeJson.Default.FileChange);
            else Console.WriteLine($"{AgentUnit.Name}: written to {unit} and enabled"
                + (Systemctl.Running ? ", started" : " (systemd is not running here: it starts at the next boot)"));
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Check()
    {
        var config = ConfigOption();
        var json = Cli.Json();
        var command = new Command("check",
            "Ask the server (or the offline directory) which release this exact kernel should run, apply nothing; " +
            "exit 0 when it runs it, 11 when not") { config, json };
        command.WithExamples("kintsugi agent check", "kintsugi agent check --json || echo 'not up to date'");
        command.Action = Cli.Run(async parse =>
        {
            var settings = AgentConfig.Load(parse.GetValue(config)!);
            var agent = new MachineAgent(settings, MachinePaths.Default,
                message => Console.Error.WriteLine($"kintsugi-agent: {message}"));
            var result = await agent.CheckAsync(CancellationToken.None);
            if (parse.GetValue(json)) Cli.WriteJson(result, ChangeJson.Default.AgentCheckResult);
            else
            {
                Console.WriteLine((result.UpToDate ? "up to date: " : "not up to date: ") + result.Detail);
                Console.WriteLine($"state:  {result.State}");
                Console.WriteLine($"source: {result.Source}");
                if (result.DisabledBecause is { } why)
                    Console.WriteLine($"note:   automatic patching is disabled ({why})");
            }
            return result.UpToDate ? 0 : (int)ExitCode.OutOfDate;
        });
        return command;
    }

    private static Command Uninstall()
    {
        var json = Cli.Json();
        var command = new Command("uninstall",
            $"Disable and remove {AgentUnit.Name} (installed patches stay; kintsugi-kernel.service, if enabled, " +
            "still re-applies them)") { json };
        command.Action = Cli.Run(parse =>
        {
            var unit = Path.Combine(MachinePaths.Default.SystemdUnits, AgentUnit.Name);
            var changed = File.Exists(unit);
            // Stopped and disabled first: removing the file alone left the agent running.
            if (Systemctl.Running && changed) Systemctl.DisableNow(AgentUnit.Name);
            AgentUnit.Uninstall(MachinePaths.Default);
            if (Systemctl.Running) Systemctl.DaemonReload();
            if (parse.GetValue(json))
                Cli.WriteJson(new FileChange(changed, "removed", AgentUnit.Name, unit), ChangeJson.Default.FileChange);
            else Console.WriteLine(changed ? $"{AgentUnit.Name}: removed" : $"{AgentUnit.Name}: was not installed");
            return Task.FromResult(0);
        });
        return command;
    }
}
