using System.CommandLine;
using Kintsugi.Kernel;

namespace Kintsugi.Cli;

internal static class StatusCommand
{
    public static Command Create()
    {
        var json = Cli.Json();
        var command = new Command("status", "Show this machine's kernel, its effective version, the applied level and the CVEs it fixes, and its livepatches in the shared state vocabulary") { json };
        command.Action = Cli.Run(parse =>
        {
            var status = MachineStatus.Read(MachinePaths.Default);
            if (parse.GetValue(json)) { Cli.WriteJson(status, CliJson.Default.MachineStatus); return Task.FromResult(0); }
            Console.WriteLine($"kernel:     {status.Release}");
            Console.WriteLine($"build-id:   {status.BuildId ?? "unknown"}");
            Console.WriteLine($"version:    {status.KernelVersion}");
            Console.WriteLine($"effective:  {status.EffectiveVersion}");
            Console.WriteLine($"state:      {status.State}" + (status.DisabledBecause is { } why ? $" ({why})" : ""));
            Console.WriteLine($"taint:      {status.Taint}");
            if (status.Level is { } level) Console.WriteLine($"level:      {level} (bundle {status.Bundle})");
            if (status.CvesFixed is { Count: > 0 } cves)
                Console.WriteLine($"fixes:      {string.Join(", ", cves.Select(c => $"{c.Id} ({c.Severity})"))}");
            if (status.LastAttempt is { } attempt)
                Console.WriteLine($"last apply: {attempt.Outcome} at {attempt.At:u}: {attempt.Detail}");
            foreach (var patch in status.Patches)
                Console.WriteLine($"patch:      {patch.Name} " + (patch.Loaded ? (patch.InTransition ? "in transition" : patch.Enabled ? "enabled" : "disabled") : "not loaded") +
                    (patch.BootState is { } boot ? $", installed ({boot})" : "") +
                    (patch.Objects.Count > 0 ? $": {string.Join("; ", patch.Objects.Select(o => $"{o.Name}: {string.Join(", ", o.Functions.Select(f => f.Name))}"))}" : ""));
            return Task.FromResult(0);
        });
        return command;
    }
}
