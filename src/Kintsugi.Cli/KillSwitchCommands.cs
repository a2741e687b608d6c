using System.CommandLine;
using Kintsugi.Kernel;

namespace Kintsugi.Cli;

/// <summary>
/// <c>kintsugi disable|enable</c>: the kill switch an operator reaches for when a machine misbehaves after a
/// patch. Disabled, nothing is applied automatically (boot re-application and the agent both stop, and
/// say why); <c>--unload</c> also removes what is loaded now.
/// </summary>
internal static class KillSwitchCommands
{
    public static Command Disable()
    {
        var reason = new Option<string>("--reason")
        {
            Description = "Why, recorded in the switch file and shown by status",
            DefaultValueFactory = _ => "disabled by an operator"
        };
        var unload = new Option<bool>("--unload")
        {
            Description =
            "Also unload every loaded livepatch now (installed ones stay installed, not re-applied while disabled)"
        };
        var timeout = new Option<int>("--timeout")
        { Description = "Seconds to wait for each unload's transition", DefaultValueFactory = _ => 60 };
        var json = Cli.Json();
        var command = new Command("disable",
            $"Turn automatic patching off: boot re-application and the agent apply nothing until kintsugi enable " +
            $"(writes {KillSwitch.DisableFile(MachinePaths.Default)})")
            { reason, unload, timeout, json };
        command.WithExamples("kintsugi disable --reason 'INC-4711: oops after level 3'",
            "kintsugi disable --unload --json");
        command.Action = Cli.Run(parse =>
        {
            var paths = MachinePaths.Default;
            var changed = KillSwitch.Disable(paths, parse.GetValue(reason)!.ReplaceLineEndings(" "));
            var unloaded = new List<string>();
            var failures = new List<UnloadFailure>();
            if (parse.GetValue(unload))
            {
                var result = KernelCommands.UnloadAll(TimeSpan.FromSeconds(parse.GetValue(timeout)));
                unloaded.AddRange(result.Removed);
                failures.AddRange(result.Failed);
            }
            var why = KillSwitch.Reason(paths);
            if (parse.GetValue(json))
                Cli.WriteJson(new KillSwitchResult(changed || unloaded.Count > 0, false, why,
                    KillSwitch.DisableFile(paths), unloaded), ChangeJson.Default.KillSwitchResult);
            else
            {
                Console.WriteLine(changed ? $"automatic patching disabled ({why})"
                    : $"automatic patching was already disabled ({why})");
                foreach (var name in unloaded) Console.WriteLine($"{name}: removed");
                if (!parse.GetValue(unload) && LivepatchSysfs.List().Count > 0)
                    Console.WriteLine("loaded livepatches stay loaded: kintsugi kernel unload --all removes them");
            }
            foreach (var failure in failures)
                Console.Error.WriteLine($"kintsugi: error: {failure.Patch}: {failure.Message}");
            return Task.FromResult(failures.Count > 0 ? failures[0].ExitCode : 0);
        });
        return command;
    }

    public static Command Enable()
    {
        var json = Cli.Json();
        var command = new Command("enable",
            "Turn automatic patching back on (removes the switch file; kintsugi.enable=0 on the kernel command line " +
            "stays until a boot without it)") { json };
        command.WithExamples("kintsugi enable", "kintsugi enable --json");
        command.Action = Cli.Run(parse =>
        {
            var paths = MachinePaths.Default;
            var changed = KillSwitch.Enable(paths);
            var why = KillSwitch.Reason(paths);
            if (parse.GetValue(json))
                Cli.WriteJson(new KillSwitchResult(changed, why is null, why, KillSwitch.DisableFile(paths), []),
                    ChangeJson.Default.KillSwitchResult);
            else if (why is not null)
                Console.WriteLine($"automatic patching is still disabled: {why}; boot without it to enable");
            else
                Console.WriteLine(changed ? "automatic patching enabled" : "automatic patching was already enabled");
            return Task.FromResult(why is null ? 0 : (int)ExitCode.Disabled);
        });
        return command;
    }
}
