using System.CommandLine;
using System.Text.Json.Serialization;
using Kintsugi.Diff;
using Kintsugi.Elf;

namespace Kintsugi.Cli;

/// <summary>kernel diff --json: what the differ decided about two compilations of one unit, and why.</summary>
public sealed record DiffReport(
    string Object,
    IReadOnlyList<FunctionDiff> Functions,
    IReadOnlyList<DataDiff> Data,
    IReadOnlyList<DiffRefusal> Refusals,
    IReadOnlyList<LoadTimeReference> References,
    IReadOnlyList<string> Callbacks,
    IReadOnlyList<DiffDecision> Decisions,
    string? Output);

/// <summary>
/// <c>kintsugi kernel diff BEFORE.o AFTER.o</c>: the differ on its own, for the patch author who wants to know
/// why a function is (or is not) in a livepatch. With <c>--trace</c> it prints every correlation, comparison,
/// inclusion, refusal and binding decision in the order the differ made them.
/// </summary>
internal static class DiffCommand
{
    public static Command Create()
    {
        var before = new Argument<FileInfo>("before.o")
        { Description = "The unit compiled without the fix (-ffunction-sections -fdata-sections)" };
        var after = new Argument<FileInfo>("after.o")
        { Description = "The same unit compiled with the fix, with the same flags" };
        var module = new Option<string?>("--module")
        { Description = "The module the unit is linked into (default: vmlinux)" };
        var trace = new Option<bool>("--trace") { Description = "Print every decision of the differ and its reason" };
        var output = new Option<FileInfo?>("--output", "-o")
        { Description = "Write the livepatch object (when there is one) here" };
        var json = Cli.Json();
        var command = new Command("diff",
            "Compare two compilations of one translation unit as the builder does: changed, new and " +
            "refused functions, load-time references; --trace says why") { before, after, module, trace, output, json };
        command.Action = Cli.Run(parse =>
        {
            var decisions = new List<DiffDecision>();
            var traced = parse.GetValue(trace);
            var name = parse.GetValue(module) is { } m ? PatchedObjectName.Parse(m) : PatchedObjectName.Vmlinux;
            var options = new DiffOptions(name, "kintsugi_") { Trace = traced ? decisions.Add : null };
            var result = ObjectDiffer.Diff(Load(parse.GetValue(before)!), Load(parse.GetValue(after)!), options);
            var written = parse.GetValue(output) is { } file && result.Output is { } elf ? Save(elf, file) : null;
            var report = new DiffReport(name.ToString(), result.Functions, result.Data, result.Refusals,
                result.References,
                result.Callbacks, decisions, written);
            if (parse.GetValue(json)) Cli.WriteJson(report, CliJson.Default.DiffReport);
            else Print(report, traced);
            return Task.FromResult((int)(result.Refusals.Count > 0 ? ExitCode.InputRefused
                : result.HasChanges ? ExitCode.Success : ExitCode.NothingToDo));
        });
        return command;
    }

    private static ElfObject Load(FileInfo file) => File.Exists(file.FullName) ? ElfObject.Load(file.FullName)
        : throw new DiffException($"{file.FullName} does not exist");

    private static string Save(ElfObject elf, FileInfo file)
    {
        elf.Save(file.FullName);
        return file.FullName;
    }

    private static void Print(DiffReport report, bool traced)
    {
        if (traced)
            foreach (var decision in report.Decisions) Console.WriteLine(decision);
        foreach (var f in report.Functions.Where(f => f.Kind != FunctionChange.Unchanged || f.Note is not null))
            Console.WriteLine($"{f.Kind.ToString().ToLowerInvariant(),-9} " +
                $"{f.Name}{(f.Note is null ? "" : $" ({f.Note})")}");
        foreach (var d in report.Data)
            Console.WriteLine($"{"data " + d.Kind.ToString().ToLowerInvariant(),-9} {d.Name}");
        foreach (var r in report.Refusals)
            Console.WriteLine($"refused   {r.Symbol}: {r.Rule}: {r.Message}");
        foreach (var r in report.References)
            Console.WriteLine($"reference {r.OutputName} -> {r.TargetName} ({(r.IsLocal ? "local" : "global")}, " +
                $"{(r.DefinedInUnit ? "defined in the unit" : "defined elsewhere")})");
        if (report.Output is not null) Console.WriteLine($"livepatch object written to {report.Output}");
        else if (report.Refusals.Count == 0 && !report.Functions.Any(f => f.Kind is FunctionChange.Changed))
            Console.WriteLine("no machine code changed: nothing to live patch");
    }
}
