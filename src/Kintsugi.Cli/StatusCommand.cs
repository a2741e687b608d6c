using System.CommandLine;
using System.Text.Json;
using Kintsugi.Agent;
using Kintsugi.Kernel;

namespace Kintsugi.Cli;

internal static class StatusCommand
{
    public static Command Create()
    {
        var json = Cli.Json();
        var format = new Option<string>("--format")
        {
            Description =
            "text, json (as --json), openvex (an OpenVEX document: the CVEs the applied level fixes) or prometheus " +
            "(a node_exporter textfile); both count user-space patches and CVEs too",
            DefaultValueFactory = _ => "text"
        };
        format.AcceptOnlyFromAmong("text", "json", "openvex", "prometheus");
        var output = new Option<FileInfo?>("--output", "-o")
        { Description = "Write to this file instead (atomically: a collector reading it never sees half a file)" };
        var command = new Command("status",
            "Show this machine's kernel, its effective version, the applied level and the CVEs it fixes, and its " +
            "livepatches in the shared state vocabulary") { json, format, output };
        command.WithExamples("kintsugi status", "kintsugi status --json",
            "kintsugi status --format openvex > /var/lib/kintsugi/vex.json",
            "kintsugi status --format prometheus -o /var/lib/prometheus/node-exporter/kintsugi.prom");
        command.Validators.Add(result =>
        {
            // An option not given reads as null here (its default is applied later).
            if (result.GetValue(json) && result.GetValue(format) is { } chosen && chosen is not ("text" or "json"))
                result.AddError("--json and --format disagree: give one");
        });
        command.Action = Cli.Run(parse =>
        {
            var status = MachineStatus.Read(MachinePaths.Default);
            var chosen = parse.GetValue(json) ? "json" : parse.GetValue(format)!;
            if (chosen != "text")
            {
                var text = chosen switch
                {
                    "json" => Json(status, UserPatches()) + "\n",
                    "openvex" => OpenVex(status, UserPatches(),
                        File.ReadAllText("/proc/sys/kernel/hostname").Trim()).ToJson() + "\n",
                    _ => StatusReports.Prometheus(status) + UserStatusReports.Prometheus(UserPatches()),
                };
                if (parse.GetValue(output) is { } file) AtomicFile.WriteText(file.FullName, text);
                else Console.Write(text);
                return Task.FromResult(0);
            }
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
                Console.WriteLine($"patch:      {patch.Name} "
                    + (patch.Loaded ? (patch.InTransition ? "in transition" : patch.Enabled ? "enabled" : "disabled")
                    : "not loaded") +
                    (patch.BootState is { } boot ? $", installed ({boot})" : "") +
                    (patch.Objects.Count > 0
                        ? $": {string.Join("; ", patch.Objects.Select(o =>
                            $"{o.Name}: {string.Join(", ", o.Functions.Select(f => f.Name))}"))}"
                        : ""));
            // User-space patches live in the processes themselves: read from their memory (as root), per patch.
            foreach (var patch in UserPatches())
                Console.WriteLine($"user patch: {patch.Name} in {patch.Object ?? "?"} (build-id {patch.BuildId})" +
                    (patch.Level is { } userLevel ? $", level {userLevel}" : "") +
                    (patch.Cves.Count > 0 ? $" fixing {string.Join(", ", patch.Cves)}" : "") +
                    $": applied in {patch.Processes.Count} process" + (patch.Processes.Count == 1 ? "" : "es") +
                    $": {string.Join(", ", patch.Processes.Take(8).Select(p => $"{p.Pid} ({p.Command})"))}" +
                    (patch.Processes.Count > 8 ? ", ..." : ""));
            return Task.FromResult(0);
        });
        return command;
    }

    /// <summary>The kernel's statements and those of the user-space patches running here, in one document.</summary>
    internal static OpenVexDocument OpenVex(MachineStatus status, IReadOnlyList<UserPatchStatus> userPatches,
        string hostname)
    {
        var kernel = StatusReports.OpenVex(status, hostname, $"kintsugi {Cli.Version}", DateTimeOffset.UtcNow);
        return OpenVexDocument.Create(kernel.Author, kernel.Tooling,
            [.. kernel.Statements, .. UserStatusReports.OpenVexStatements(userPatches, hostname)], kernel.Timestamp);
    }

    private static IReadOnlyList<UserPatchStatus> UserPatches() =>
        UserPatchStatuses.Read(UserPatchStatuses.AgentDirectory(MachinePaths.Default));

    /// <summary>The machine status, with the user-space patches running in processes as <c>userPatches</c>.</summary>
    internal static string Json(MachineStatus status, IReadOnlyList<UserPatchStatus> userPatches)
    {
        var node = JsonSerializer.SerializeToNode(status, CliJson.Default.MachineStatus)!.AsObject();
        node["userPatches"] =
            JsonSerializer.SerializeToNode(userPatches, UserCliJson.Default.IReadOnlyListUserPatchStatus);
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true })) node.WriteTo(writer);
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }
}
