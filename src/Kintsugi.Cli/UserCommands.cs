using System.CommandLine;
using System.Text.Json.Serialization;
using Kintsugi.User;
using Spectre.Console;

namespace Kintsugi.Cli;

/// <summary>user apply/revert --json: the patch and what happened to each process.</summary>
public sealed record UserPatchReport(string Patch, string PatchId, BuildId Target, string Object,
    IReadOnlyList<ProcessResult> Processes);


/// <summary>user info --json.</summary>
public sealed record UserPatchInfo(string Name, string? Description, string PatchId, BuildId Target, string Object,
    int CodeBytes,
    IReadOnlyList<ReplacedFunction> Functions, IReadOnlyList<string> Imports, IReadOnlyList<int> ProcessesMapping,
        IReadOnlyList<int> ProcessesPatched);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(UserPatchReport))]
[JsonSerializable(typeof(IReadOnlyList<Kintsugi.Agent.UserPatchStatus>))]
[JsonSerializable(typeof(UserPatchInfo))]
[JsonSerializable(typeof(Kintsugi.User.Build.UserBuildResult))]
internal sealed partial class UserCliJson : JsonSerializerContext;

/// <summary>
/// kintsugi user ...: user-space patches in running processes. Exit codes: 0 every selected process ends
/// patched (apply) or unpatched (revert); 4 some process could not be changed (busy or failed: each such process
/// was left exactly as it was; the others were changed); 6 no process maps the patch's object (apply) or has the
/// patch (revert); 3 a patch file was refused; 5 not permitted (run as root).
/// </summary>
internal static class UserCommands
{
    public static Command Create()
    {
        var user = new Command("user",
            "Apply, revert and list user-space patches in running processes (libraries and services, no restart)");
        user.Subcommands.Add(Apply());
        user.Subcommands.Add(Revert());
        user.Subcommands.Add(List());
        user.Subcommands.Add(Info());
        user.Subcommands.Add(Build());
        return user;
    }

    private static Option<int[]> PidOption(string what) => new("--pid", "-p")
    { Description = $"Only this process (repeatable); default: {what}", AllowMultipleArgumentsPerToken = false };

    private static Option<int> TimeoutOption() => new("--busy-timeout")
    {
        Description = "Milliseconds to keep retrying while a thread is inside a function being replaced",
        DefaultValueFactory = _ => 5000
    };

    private static Command Apply()
    {
        var file = new Argument<FileInfo>("patch")
        { Description = "The user-space patch file (built by kintsugi user build)" };
        var pids = PidOption("every process that maps the patch's object (found by build-id)");
        var timeout = TimeoutOption();
        var replace = new Option<bool>("--replace")
        {
            Description = "Take out every other patch of the same object in the same pause (a new cumulative " +
                "level): no thread runs the shipped code in between"
        };
        var json = Cli.Json();
        var command = new Command("apply",
            "Apply a patch to running processes: every thread is stopped for the pause shown, and the process keeps " +
            "running")
            { file, pids, timeout, replace, json };
        command.Action = Cli.Run(parse =>
        {
            var patch = UserPatch.Load(parse.GetValue(file)!.FullName);
            var targets = Targets(parse.GetValue(pids), patch.Target.BuildId);
            var patcher = new UserPatcher(Options(parse.GetValue(timeout)), parse.GetValue(Cli.Verbose) ? Cli.Progress
                : null);
            Func<AppliedPatch, bool>? replacing = parse.GetValue(replace)
                ? a => a.Target == patch.Target.BuildId && a.PatchId != patch.IdHex : null;
            var results = targets.Select(pid => patcher.Apply(pid, patch, replacing)).ToList();
            if (parse.GetValue(pids) is not { Length: > 0 })
            {
                // A process forked during the pass by a parent not yet patched (a server's new worker) was not in the
                // list: passes repeat until no process mapping the object is left unvisited (a few at most).
                for (var pass = 2; pass <= 5; pass++)
                {
                    var late = Targets(null, patch.Target.BuildId).Except(results.Select(r => r.Pid)).ToList();
                    if (late.Count == 0) break;
                    results.AddRange(late.Select(pid => patcher.Apply(pid, patch, replacing)));
                }
            }
            return Task.FromResult(Report(patch, results, parse.GetValue(json), ProcessOutcome.Applied));
        });
        return command;
    }

    private static Command Revert()
    {
        var file = new Argument<FileInfo?>("patch")
        { Description = "The patch to revert; without it, --all", Arity = ArgumentArity.ZeroOrOne };
        var all = new Option<bool>("--all") { Description = "Revert every Kintsugi patch in the selected processes" };
        var pids = PidOption("every process the patch is applied in");
        var timeout = TimeoutOption();
        var json = Cli.Json();
        var command = new Command("revert",
            "Revert a patch in running processes: restores every byte it changed and unmaps its code")
            { file, all, pids, timeout, json };
        command.Validators.Add(result =>
        {
            if ((result.GetValue(file) is null) == !result.GetValue(all))
                result.AddError("give either a patch file or --all");
        });
        command.Action = Cli.Run(parse =>
        {
            var patch = parse.GetValue(file) is { } f ? UserPatch.Load(f.FullName) : null;
            var patcher = new UserPatcher(Options(parse.GetValue(timeout)), parse.GetValue(Cli.Verbose) ? Cli.Progress
                : null);
            Func<AppliedPatch, bool> select = patch is null ? _ => true : applied => applied.PatchId == patch.IdHex;
            var explicitPids = parse.GetValue(pids) ?? [];
            var targets = explicitPids.Length > 0 ? explicitPids.ToList()
                : UserPatcher.ListAll().Where(p => p.Patches.Any(select)).Select(p => p.Pid).ToList();
            var results = targets.Select(pid => patcher.Revert(pid, select)).ToList();
            if (patch is null)
            {
                if (parse.GetValue(json))
                    Cli.WriteJson(new UserPatchReport("*", "*", default, "*", results),
                    UserCliJson.Default.UserPatchReport);
                else Print(results);
                return Task.FromResult(ExitFor(results, ProcessOutcome.Reverted,
                    "no process has a Kintsugi patch applied"));
            }
            return Task.FromResult(Report(patch, results, parse.GetValue(json), ProcessOutcome.Reverted));
        });
        return command;
    }

    private static Command List()
    {
        var pids = PidOption("every process");
        var json = Cli.Json();
        var command = new Command("list",
            "List the user-space patches applied in running processes (read from their memory)") { pids, json };
        command.Action = Cli.Run(parse =>
        {
            var explicitPids = parse.GetValue(pids) ?? [];
            var found = Kintsugi.Agent.UserPatchStatuses.Read(
                Kintsugi.Agent.UserPatchStatuses.AgentDirectory(Kintsugi.Kernel.MachinePaths.Default),
                explicitPids.Length > 0 ? explicitPids : null);
            if (parse.GetValue(json))
            {
                Cli.WriteJson(found, UserCliJson.Default.IReadOnlyListUserPatchStatus);
                return Task.FromResult(0);
            }
            if (found.Count == 0) { Console.WriteLine("no user-space patches applied"); return Task.FromResult(0); }
            var table = new Table().AddColumns("pid", "command", "patch", "id", "object", "level", "functions");
            foreach (var patch in found)
                foreach (var process in patch.Processes)
                    table.AddRow(process.Pid.ToString(), Markup.Escape(process.Command), Markup.Escape(patch.Name),
                        patch.PatchId[..12], Markup.Escape($"{patch.Object ?? "?"} ({patch.BuildId.ToString()[..12]})"),
                        patch.Level?.ToString() ?? "-", patch.Functions.ToString());
            Tables.Write(table);
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Info()
    {
        var file = new Argument<FileInfo>("patch") { Description = "A user-space patch file" };
        var json = Cli.Json();
        var command = new Command("info",
            "Show what a patch replaces, what it imports, and which running processes map its object or have it " +
            "applied") { file, json };
        command.Action = Cli.Run(parse =>
        {
            var patch = UserPatch.Load(parse.GetValue(file)!.FullName);
            var mapping = UserPatcher.ProcessesMapping(patch.Target.BuildId);
            var patched = UserPatcher.ListAll().Where(p => p.Patches.Any(a => a.PatchId == patch.IdHex))
                .Select(p => p.Pid).ToList();
            var info = new UserPatchInfo(patch.Name, patch.Description, patch.IdHex, patch.Target.BuildId,
                patch.Target.Object, patch.Code.Length,
                patch.Functions,
                    patch.Relocations.Where(r => r.Base == RelocationBase.Import).Select(r => r.Symbol!).Distinct()
                    .Order().ToList(), mapping, patched);
            if (parse.GetValue(json))
            {
                Cli.WriteJson(info, UserCliJson.Default.UserPatchInfo);
                return Task.FromResult(0);
            }
            Console.WriteLine($"patch      {info.Name} ({info.PatchId})");
            if (info.Description is not null) Console.WriteLine($"           {info.Description}");
            Console.WriteLine($"object     {info.Object}, build-id {info.Target}");
            foreach (var f in info.Functions)
                Console.WriteLine($"replaces   {f.Name} at 0x{f.Address:x} ({f.Size} bytes)");
            Console.WriteLine($"code       {info.CodeBytes} bytes"
                + (info.Imports.Count > 0 ? $", imports {string.Join(", ", info.Imports)}" : ""));
            Console.WriteLine($"processes  {mapping.Count} map the object"
                + (mapping.Count > 0 ? $" ({string.Join(" ", mapping)})" : "") +
                $", {patched.Count} have the patch applied"
                    + (patched.Count > 0 ? $" ({string.Join(" ", patched)})" : ""));
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Build()
    {
        var obj = new Argument<FileInfo>("object")
        { Description = "The exact shipped ELF object (executable or shared library, with its symbols)" };
        var source = new Option<DirectoryInfo?>("--source")
        {
            Description = "The source tree the object was built from; default: fetched (--package, or the " +
                "installed " +
                "package owning the object)"
        };
        var package = new Option<string?>("--package")
        {
            Description = "PACKAGE=VERSION: fetch that exact source with apt-get source (private apt state, cached " +
                "by " +
                "content) and read its build flags from debian/rules"
        };
        var dsc = new Option<FileInfo?>("--dsc")
        {
            Description = "A source package obtained elsewhere (its .dsc, the files it names beside it): unpacked, " +
                "cached by content and configured as a fetched one"
        };
        var fix = new Option<FileInfo>("--fix")
        { Description = "The fix, a unified diff against the source tree (patch -p1)", Required = true };
        var fixedObject = new Option<FileInfo?>("--fixed-object")
        {
            Description = "A build of the same object that carries the fix (the distribution's security update): " +
                "each replaced function's new code must equal its code"
        };
        var flags = new Option<string?>("--cflags")
        {
            Description = "The compiler flags the distribution used; default: dpkg-buildflags' CPPFLAGS and CFLAGS " +
                "with the settings of the package's debian/rules"
        };
        var installDependencies = new Option<bool>("--install-build-deps")
        {
            Description = "Install the package's missing build dependencies (apt-get build-dep) to configure its " +
                "source as Debian built it"
        };
        var directory = new Option<string>("--directory", "-C")
        {
            Description = "Where the build compiled from, relative to the source tree",
            DefaultValueFactory = _ => "."
        };
        var name = new Option<string?>("--name") { Description = "The patch's name; default: the fix's file name" };
        var output = new Option<FileInfo?>("--output", "-o")
        { Description = "Where to write the patch; default: NAME.kup.json" };
        var json = Cli.Json();
        var command = new Command("build",
            "Build a user-space patch for one exact object from a source fix, proven against the shipped code")
            { obj, source, package, dsc, fix, fixedObject, flags, directory, name, output, installDependencies, json };
        command.Action = Cli.Run(async parse =>
        {
            var fixFile = parse.GetValue(fix)!;
            var patchName = parse.GetValue(name) ?? Path.GetFileNameWithoutExtension(fixFile.Name);
            string tree;
            IReadOnlyList<string>? packageFlags = null;
            Kintsugi.User.Build.ConfiguredSource? configured = null;
            if (new object?[] { parse.GetValue(source), parse.GetValue(package), parse.GetValue(dsc) }
                .Count(o => o is not null) > 1)
                throw new UsageException("give one of --source, --package and --dsc");
            if (parse.GetValue(source) is { } given) tree = given.FullName;
            else
            {
                var debian = new Kintsugi.User.Build.DebianSource(Kintsugi.User.Build.DebianSource.DefaultCacheRoot,
                    Cli.Progress);
                var prepared = parse.GetValue(dsc) is { } local ? await debian.PrepareLocalAsync(local.FullName)
                    : await debian.PrepareAsync(parse.GetValue(package) is { } text
                        ? Kintsugi.User.Build.SourcePackage.Parse(text)
                        : await OwningPackage(parse.GetValue(obj)!.FullName));
                Cli.Progress($"source of {prepared.Package}: {prepared.Tree}");
                (tree, packageFlags) = (prepared.Tree, prepared.CompilerFlags);
                // Given flags mean the user knows how the units compile; otherwise the package's build says it.
                if (parse.GetValue(flags) is null)
                {
                    configured = await new Kintsugi.User.Build.SourceConfigurator(Cli.Progress)
                        .ConfigureAsync(prepared, parse.GetValue(installDependencies));
                    tree = configured.Tree;
                }
            }
            var cflags = parse.GetValue(flags) ?? (packageFlags is not null ? string.Join(' ', packageFlags)
                : string.Join(' ', await Kintsugi.User.Build.DebianSource.BuildFlagsAsync(tree)));
            var request =
                new Kintsugi.User.Build.UserBuildRequest(parse.GetValue(obj)!.FullName, tree, fixFile.FullName,
                cflags.Split(' ', StringSplitOptions.RemoveEmptyEntries), patchName, parse.GetValue(output)?.FullName
                    ?? Path.GetFullPath(patchName + ".kup.json"),
                WorkingDirectory: parse.GetValue(directory)!, Configured: configured,
                FixedObjectPath: parse.GetValue(fixedObject)?.FullName);
            var result = await new Kintsugi.User.Build.UserPatchBuilder(Cli.Progress).BuildAsync(request);
            if (parse.GetValue(json)) { Cli.WriteJson(result, UserCliJson.Default.UserBuildResult); return 0; }
            Console.WriteLine($"{result.OutputPath}: replaces {string.Join(", ", result.Functions)} in build-id " +
                $"{result.Target}");
            return 0;
        });
        return command;
    }

    /// <summary>The source package and version of the installed package that owns <paramref name="path"/> (dpkg's
    /// database).</summary>
    private static async Task<Kintsugi.User.Build.SourcePackage> OwningPackage(string path)
    {
        var real = new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? path;
        var owner = await ExternalCommand.RunAsync("dpkg-query", ["-S", real]);
        if (!owner.Succeeded || owner.StandardOutput.Split(':', 2) is not [var binary, _])
            throw new UsageException($"{path} belongs to no installed package; give --package PACKAGE=VERSION (or " +
                $"--source with the tree)");
        var source = await ExternalCommand.RunAsync("dpkg-query",
            ["-W", "-f=${source:Package}=${source:Version}", binary.Trim()]);
        if (!source.Succeeded) throw new UsageException($"dpkg-query cannot tell the source of {binary.Trim()}: " +
            $"{source.StandardError.Trim()}; give --package");
        return Kintsugi.User.Build.SourcePackage.Parse(source.StandardOutput.Trim());
    }

    private static PatcherOptions Options(int busyMilliseconds) =>
        PatcherOptions.Default with { BusyTimeout = TimeSpan.FromMilliseconds(Math.Max(0, busyMilliseconds)) };

    private static List<int> Targets(int[]? pids, BuildId buildId) =>
        pids is { Length: > 0 } ? [.. pids] : [.. UserPatcher.ProcessesMapping(buildId)];

    private static int Report(UserPatch patch, IReadOnlyList<ProcessResult> results, bool json, ProcessOutcome success)
    {
        if (json)
            Cli.WriteJson(new UserPatchReport(patch.Name, patch.IdHex, patch.Target.BuildId, patch.Target.Object,
            results), UserCliJson.Default.UserPatchReport);
        else Print(results);
        return ExitFor(results, success, success == ProcessOutcome.Applied
            ? $"no running process maps {patch.Target.Object} with build-id {patch.Target.BuildId}"
            : $"patch {patch.Name} is not applied in any running process");
    }

    private static void Print(IReadOnlyList<ProcessResult> results)
    {
        foreach (var r in results)
        {
            var what = r.Outcome switch
            {
                ProcessOutcome.Applied =>
                    $"applied, paused {r.PauseMilliseconds:0.00} ms ({r.Threads} threads, {r.Attempts} " +
                    $"attempt{(r.Attempts > 1 ? "s" : "")})",
                ProcessOutcome.Reverted =>
                    $"reverted, paused {r.PauseMilliseconds:0.00} ms ({r.Threads} threads, {r.Attempts} " +
                    $"attempt{(r.Attempts > 1 ? "s" : "")})",
                ProcessOutcome.AlreadyApplied => "already applied",
                ProcessOutcome.Exited => "exited meanwhile",
                ProcessOutcome.NotApplied => "not applied",
                ProcessOutcome.NotTarget => $"skipped: {r.Message}",
                ProcessOutcome.Busy => $"busy, left as it was: {r.Message}",
                _ => $"failed, left as it was: {r.Message}",
            };
            Console.WriteLine($"{r.Pid} ({r.Command}): {what}");
        }
    }

    private static int ExitFor(IReadOnlyList<ProcessResult> results, ProcessOutcome success, string nothing)
    {
        if (results.Any(r => r.Outcome is ProcessOutcome.Busy or ProcessOutcome.Failed))
            return (int)ExitCode.TransitionFailed;
        if (results.Any(r => r.Outcome == success || r.Outcome == ProcessOutcome.AlreadyApplied)) return 0;
        Console.Error.WriteLine($"kintsugi: {nothing}");
        return (int)ExitCode.NotFound;
    }

    private static string Command(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (IOException) { return "?"; }
    }
}
