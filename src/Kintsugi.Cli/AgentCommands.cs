using System.CommandLine;
using Kintsugi.Agent;
using Kintsugi.Kernel;

namespace Kintsugi.Cli;

/// <summary>kintsugi agent ...: the machine-side daemon that applies signed bundles meant for this exact kernel.</summary>
internal static class AgentCommands
{
    private static Option<string> ConfigOption() => new("--config") { Description = "The agent's configuration file", DefaultValueFactory = _ => AgentConfig.DefaultPath };

    public static Command Create()
    {
        var agent = new Command("agent", "The machine agent: re-apply at boot, then fetch, verify, apply and report signed livepatch bundles (server or offline directory)");
        agent.Subcommands.Add(Run());
        agent.Subcommands.Add(Install());
        agent.Subcommands.Add(Uninstall());
        return agent;
    }

    private static Command Run()
    {
        var config = ConfigOption();
        var once = new Option<bool>("--once") { Description = "One check (boot re-application and recovery first), then exit with its outcome" };
        var command = new Command("run", "Run the agent (what kintsugi-agent.service starts): until stopped, or once with --once") { config, once };
        command.Action = Cli.Run(async parse =>
        {
            var settings = AgentConfig.Load(parse.GetValue(config)!);
            var agent = new MachineAgent(settings, MachinePaths.Default, message => Console.Error.WriteLine($"kintsugi-agent: {message}"));
            if (parse.GetValue(once))
            {
                agent.Start();
                var result = await agent.RunOnceAsync(CancellationToken.None);
                Console.WriteLine($"state {result.State}" + (result.Level is { } level ? $", level {level}" : "") + (result.Detail.Length > 0 ? $": {result.Detail}" : ""));
                return (int)result.ExitCode;
            }
            using var stop = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
            using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, context => { context.Cancel = true; stop.Cancel(); });
            await agent.RunAsync(stop.Token);
            return 0;
        });
        return command;
    }

    private static Command Install()
    {
        var config = ConfigOption();
        var command = new Command("install", $"Check the configuration, then write and enable {AgentUnit.Name} (the agent also re-applies installed patches at boot)") { config };
        command.Action = Cli.Run(parse =>
        {
            var path = Path.GetFullPath(parse.GetValue(config)!);
            AgentConfig.Load(path);
            var unit = AgentUnit.Install(MachinePaths.Default, SystemdUnit.CurrentCommand(), path);
            Console.WriteLine($"{AgentUnit.Name}: written to {unit} and enabled (start it with systemctl start {AgentUnit.Name})");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Uninstall()
    {
        var command = new Command("uninstall", $"Disable and remove {AgentUnit.Name} (installed patches stay; kintsugi-kernel.service, if enabled, still re-applies them)");
        command.Action = Cli.Run(_ =>
        {
            AgentUnit.Uninstall(MachinePaths.Default);
            Console.WriteLine($"{AgentUnit.Name}: removed");
            return Task.FromResult(0);
        });
        return command;
    }
}
