using System.CommandLine;
using Kintsugi.Kernel;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Spectre.Console;

namespace Kintsugi.Cli;

/// <summary>kintsugi kernel ...: the livepatch runtime on this machine, and fetching distribution kernels.</summary>
internal static class KernelCommands
{
    private static Option<int> TimeoutOption() =>
        new("--timeout") { Description = "Seconds to wait for a livepatch transition", DefaultValueFactory = _ => 60 };

    public static Command Create()
    {
        var kernel = new Command("kernel",
            "Load, list, remove and install kernel livepatches on this machine; fetch distribution kernels");
        kernel.Subcommands.Add(Load());
        kernel.Subcommands.Add(Unload());
        kernel.Subcommands.Add(List());
        kernel.Subcommands.Add(Info());
        kernel.Subcommands.Add(Install());
        kernel.Subcommands.Add(Uninstall());
        kernel.Subcommands.Add(Retry());
        kernel.Subcommands.Add(Boot());
        kernel.Subcommands.Add(KernelCatalogCommand.Create());
        kernel.Subcommands.Add(Fetch());
        kernel.Subcommands.Add(Prepare());
        kernel.Subcommands.Add(Build());
        kernel.Subcommands.Add(CatchUp());
        kernel.Subcommands.Add(DiffCommand.Create());
        kernel.Subcommands.Add(Test());
        return kernel;
    }

    private static Command Load()
    {
        var module = new Argument<FileInfo>("module.ko") { Description = "The livepatch module to load" };
        var timeout = TimeoutOption();
        var force = new Option<bool>("--force")
        {
            Description =
            "Force a stalled transition to complete (tasks that never switched may keep running old code: the " +
            "consistency guarantee is lost)"
        };
        var uname = new Option<bool>("--effective-uname")
        {
            Description =
                "While it is applied, uname -v and /proc/version show the effective version (as with " +
                "/etc/kintsugi/effective-uname)",
        };
        var json = Cli.Json();
        var command = new Command("load",
            "Load a livepatch and wait for its transition; a stalled transition is reported with the blocking tasks " +
            "and reverted") { module, timeout, force, uname, json };
        command.WithExamples("kintsugi kernel load ./proc_cmdline_1.ko",
            "kintsugi kernel load ./fix_2.ko --timeout 120 --json",
            "kintsugi kernel load ./fix_2.ko --effective-uname");
        command.Action = Cli.Run(async parse =>
        {
            var file = ModuleFile.Read(parse.GetValue(module)!.FullName);
            var outcome = new LivepatchRuntime(Cli.Progress)
                .Load(file, TimeSpan.FromSeconds(parse.GetValue(timeout)), parse.GetValue(force),
                effectiveUname: parse.GetValue(uname) ? true : null);
            LoadedRecord.Write(MachinePaths.Default, file);
            if (parse.GetValue(json))
                Cli.WriteJson(new PatchChange(true, "loaded", outcome.Name.ToString(),
                    [.. outcome.Replaced.Select(r => r.ToString())], outcome.Forced), ChangeJson.Default.PatchChange);
            else
                Console.WriteLine($"{outcome.Name}: applied" + (outcome.Forced ? " (forced)" : "") +
                    (outcome.Replaced.Count > 0 ? $", replaced {string.Join(", ", outcome.Replaced)}" : ""));
            return await Task.FromResult(0);
        });
        return command;
    }

    private static Command Unload()
    {
        var name = new Argument<string?>("name")
        { Description = "The loaded livepatch (module name)", Arity = ArgumentArity.ZeroOrOne };
        var all = new Option<bool>("--all")
        {
            Description =
            "Unload every loaded livepatch (installed ones are re-applied at the next boot unless uninstalled or " +
            "disabled)"
        };
        var timeout = TimeoutOption();
        var json = Cli.Json();
        var command = new Command("unload", "Disable a livepatch, wait for the transition back, and remove its module")
            { name, all, timeout, json };
        command.WithExamples("kintsugi kernel unload proc_cmdline_1", "kintsugi kernel unload --all --json");
        command.Validators.Add(result =>
        {
            if ((result.GetValue(name) is not null) == result.GetValue(all))
                result.AddError("give either a livepatch's name or --all");
        });
        command.Action = Cli.Run(parse =>
        {
            var wait = TimeSpan.FromSeconds(parse.GetValue(timeout));
            if (parse.GetValue(all))
            {
                var result = UnloadAll(wait);
                if (parse.GetValue(json)) Cli.WriteJson(result, ChangeJson.Default.UnloadAllResult);
                else
                {
                    foreach (var removed in result.Removed) Console.WriteLine($"{removed}: removed");
                    if (result.Removed.Count == 0 && result.Failed.Count == 0)
                        Console.WriteLine("no livepatches loaded");
                }
                foreach (var failure in result.Failed)
                    Console.Error.WriteLine($"kintsugi: error: {failure.Patch}: {failure.Message}");
                return Task.FromResult(result.Failed.Count > 0 ? result.Failed[0].ExitCode : 0);
            }
            var module = ModuleName.Parse(parse.GetValue(name)!);
            new LivepatchRuntime(Cli.Progress).Unload(module, wait);
            LoadedRecord.Remove(MachinePaths.Default, module);
            if (parse.GetValue(json))
                Cli.WriteJson(new PatchChange(true, "unloaded", module.ToString(), []), ChangeJson.Default.PatchChange);
            else Console.WriteLine($"{module}: removed");
            return Task.FromResult(0);
        });
        return command;
    }

    /// <summary>
    /// Unloads every loaded livepatch, newest first (a patch stacked on another must go before it); one that
    /// cannot be unloaded is reported and the others are still tried.
    /// </summary>
    public static UnloadAllResult UnloadAll(TimeSpan timeout)
    {
        var runtime = new LivepatchRuntime(Cli.Progress);
        var removed = new List<string>();
        var failed = new List<UnloadFailure>();
        var loaded = LivepatchSysfs.List()
            .OrderByDescending(p => LoadedRecord.Read(MachinePaths.Default, p.Name)?.LoadedAt
                ?? DateTimeOffset.MinValue).ToList();
        foreach (var patch in loaded)
        {
            try
            {
                runtime.Unload(patch.Name, timeout);
                LoadedRecord.Remove(MachinePaths.Default, patch.Name);
                removed.Add(patch.Name.ToString());
            }
            catch (KintsugiException e)
            {
                failed.Add(new UnloadFailure(patch.Name.ToString(), (int)e.ExitCode,
                e.Message));
            }
        }
        return new UnloadAllResult(removed.Count > 0, removed, failed);
    }

    private static Command List()
    {
        var json = Cli.Json();
        var command = new Command("list",
            "List loaded livepatches: enabled and transition state, and the functions patched per object") { json };
        command.Action = Cli.Run(parse =>
        {
            var patches = LivepatchSysfs.List();
            if (parse.GetValue(json))
            {
                Cli.WriteJson(patches,
                CliJson.Default.IReadOnlyListLoadedPatch); return Task.FromResult(0);
            }
            if (patches.Count == 0) { Console.WriteLine("no livepatches loaded"); return Task.FromResult(0); }
            var table = new Table().AddColumns("patch", "enabled", "transition", "object", "functions");
            foreach (var patch in patches)
            {
                var first = true;
                foreach (var obj in patch.Objects.DefaultIfEmpty(new PatchedObject("-", null, [])))
                {
                    table.AddRow(first ? patch.Name.Value : "", first ? Yes(patch.Enabled) : "", first
                        ? Yes(patch.InTransition) : "",
                        Markup.Escape(obj.Name),
                            Markup.Escape(string.Join(", ",
                            obj.Functions.Select(f => f.Sympos == 0 ? f.Name : $"{f.Name},{f.Sympos}"))));
                    first = false;
                }
            }
            Tables.Write(table);
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Info()
    {
        var target = new Argument<string>("module")
        { Description = "A module file (.ko) or the name of a loaded livepatch" };
        var json = Cli.Json();
        var command = new Command("info", "Show a livepatch module's metadata") { target, json };
        command.Action = Cli.Run(parse =>
        {
            var info = Describe(parse.GetValue(target)!);
            if (parse.GetValue(json)) { Cli.WriteJson(info, CliJson.Default.ModuleInfo); return Task.FromResult(0); }
            var grid = new Grid().AddColumn().AddColumn();
            void Row(string key, string? value) => grid.AddRow(Markup.Escape(key), Markup.Escape(value ?? "-"));
            Row("name", info.Name);
            Row("file", info.Path);
            Row("livepatch", Yes(info.Livepatch));
            Row("built for", info.Vermagic);
            Row("build-id", info.BuildId);
            Row("sha256", info.Sha256);
            Row("loaded", info.Loaded ? (info.Enabled == true ? "yes, enabled" : "yes") : "no");
            foreach (var (key, value) in info.ModInfo.Where(kv => kv.Key is not ("vermagic" or "livepatch" or "name")))
                Row(key, value);
            foreach (var obj in info.Objects)
                Row("patches " + obj.Name, string.Join(", ", obj.Functions.Select(f => f.Name)));
            Tables.Write(grid);
            return Task.FromResult(0);
        });
        return command;
    }

    private static ModuleInfo Describe(string target)
    {
        ModuleFile? file = null;
        ModuleName name;
        if (File.Exists(target)) { file = ModuleFile.Read(target); name = file.Name; }
        else if (ModuleName.TryParse(target, out name))
        {
            var record = LoadedRecord.Read(MachinePaths.Default, name);
            var store = new PatchStore(MachinePaths.Default, RunningKernel.Release);
            if (record is not null && File.Exists(record.Path)) file = ModuleFile.Read(record.Path);
            else if (store.Find(name) is not null) file = ModuleFile.Read(store.ModulePath(name));
            else if (!RunningKernel.IsModuleLoaded(name))
                throw new LivepatchException($"{target} is neither a file nor a loaded module", ExitCode.NotFound);
        }
        else throw new LivepatchException($"{target} is neither a file nor a module name", ExitCode.NotFound);

        var loaded = LivepatchSysfs.TryRead(name);
        var modInfo = (file?.ModInfo ?? []).GroupBy(kv => kv.Key)
            .ToDictionary(g => g.Key, g => string.Join(", ", g.Select(kv => kv.Value)));
        return new ModuleInfo(name.Value, file?.Path, file?.IsLivepatch ?? loaded is not null, file?["vermagic"],
            file?.BuildId?.ToString(), file?.Sha256,
            loaded is not null || RunningKernel.IsModuleLoaded(name), loaded?.Enabled, modInfo, loaded?.Objects ?? []);
    }

    private static Command Install()
    {
        var module = new Argument<FileInfo>("module.ko")
        { Description = "The livepatch module to keep and re-apply at every boot" };
        var noLoad = new Option<bool>("--no-load") { Description = "Only install; do not load now" };
        var timeout = TimeoutOption();
        var json = Cli.Json();
        var command = new Command("install",
            "Keep a livepatch under /var/lib/kintsugi/<release>/ and re-apply it at boot (systemd unit " +
            "kintsugi-kernel.service)") { module, noLoad, timeout, json };
        command.WithExamples("kintsugi kernel install ./proc_cmdline_1.ko",
            "kintsugi kernel install ./fix_2.ko --no-load --json");
        command.Action = Cli.Run(parse =>
        {
            var file = ModuleFile.Read(parse.GetValue(module)!.FullName);
            LivepatchRuntime.CheckLoadable(file);
            var paths = MachinePaths.Default;
            var store = new PatchStore(paths, RunningKernel.Release);
            var record = store.Install(file);
            // The package's unit when it is installed (only enabled), else one written for this binary.
            if (Systemctl.Packaged(SystemdUnit.Name)) AgentUnitLinks.Enable(paths, SystemdUnit.Name);
            else SystemdUnit.Install(paths, SystemdUnit.CurrentCommand());
            if (Systemctl.Running) Systemctl.DaemonReload();
            var quiet = parse.GetValue(json);
            if (!quiet)
                Console.WriteLine($"{record.Name}: installed in {store.Directory}; {SystemdUnit.Name} re-applies it " +
                "at boot");
            IReadOnlyList<string> replaced = [];
            if (!parse.GetValue(noLoad))
            {
                var installed = ModuleFile.Read(store.ModulePath(file.Name));
                var outcome = new LivepatchRuntime(Cli.Progress)
                    .Load(installed, TimeSpan.FromSeconds(parse.GetValue(timeout)));
                replaced = [.. outcome.Replaced.Select(r => r.ToString())];
                LoadedRecord.Write(paths, installed);
                store.Save(record with { BootState = BootState.Healthy, LastLoadAt = DateTimeOffset.UtcNow });
                if (!quiet) Console.WriteLine($"{record.Name}: applied");
            }
            if (quiet)
                Cli.WriteJson(new PatchChange(true, parse.GetValue(noLoad) ? "installed" : "installed-and-loaded",
                record.Name, replaced, Directory: store.Directory), ChangeJson.Default.PatchChange);
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Uninstall()
    {
        var name = new Argument<string>("name") { Description = "The installed livepatch (module name or file)" };
        var json = Cli.Json();
        var command = new Command("uninstall",
            "Stop re-applying a livepatch at boot and delete its kept copy (a loaded patch stays loaded: unload it " +
            "with kernel unload)") { name, json };
        command.WithExamples("kintsugi kernel uninstall proc_cmdline_1");
        command.Action = Cli.Run(parse =>
        {
            var text = parse.GetValue(name)!;
            var module = File.Exists(text) ? ModuleFile.Read(text).Name
                : ModuleName.Parse(Path.GetFileNameWithoutExtension(text));
            var store = new PatchStore(MachinePaths.Default, RunningKernel.Release);
            if (!store.Uninstall(module))
                throw new LivepatchException($"{module} is not installed for {RunningKernel.Release}",
                ExitCode.NotFound);
            if (store.List().Count == 0) SystemdUnit.Uninstall(MachinePaths.Default);
            if (parse.GetValue(json))
                Cli.WriteJson(new PatchChange(true, "uninstalled", module.ToString(), []),
                ChangeJson.Default.PatchChange);
            else Console.WriteLine($"{module}: uninstalled");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Retry()
    {
        var name = new Argument<string>("name") { Description = "The quarantined livepatch (module name)" };
        var command = new Command("retry",
            "Take a livepatch out of quarantine: it is loaded again at the next boot or apply, under the same " +
            "crash-loop guard") { name };
        command.Action = Cli.Run(parse =>
        {
            var module = ModuleName.Parse(parse.GetValue(name)!);
            var store = new PatchStore(MachinePaths.Default, RunningKernel.Release);
            var was = store.Find(module);
            var record = store.Retry(module)
                ?? throw new LivepatchException($"{module} is not installed for {RunningKernel.Release}",
                ExitCode.NotFound);
            Console.WriteLine(was?.BootState == BootState.Quarantined
                ? $"{module}: out of quarantine (was: {was.Note}); it is loaded at the next boot or apply"
                : $"{module}: not quarantined ({record.BootState.ToString().ToLowerInvariant()}); nothing to do");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Boot()
    {
        var settle = new Option<int>("--settle")
        {
            Description = "Seconds a loaded patch must run without kernel problems before it is confirmed healthy",
            DefaultValueFactory = _ => 10
        };
        var timeout = TimeoutOption();
        var trust = KeysCommands.TrustOption();
        trust.Description =
            "The trust store: installed patches signed by a key retired there are uninstalled, not loaded";
        var json = Cli.Json();
        var command = new Command("boot",
            "Re-apply installed livepatches (run by kintsugi-kernel.service at boot), honouring the kill switch, " +
            "retired keys and the crash-loop guard") { settle, timeout, trust, json };
        command.Action = Cli.Run(parse =>
        {
            var paths = MachinePaths.Default;
            var result = new BootApplier(paths, new LivepatchRuntime(Cli.Progress), Cli.Progress)
                .Run(TimeSpan.FromSeconds(parse.GetValue(settle)), TimeSpan.FromSeconds(parse.GetValue(timeout)),
                    Kintsugi.Agent.RetiredKeys.BootRefusal(parse.GetValue(trust)!, Cli.Progress));
            if (parse.GetValue(json)) Cli.WriteJson(result, CliJson.Default.BootResult);
            else foreach (var action in result.Actions) Console.WriteLine($"{action.Patch}: {action.Action}"
                + (action.Detail.Length > 0 ? $" ({action.Detail})" : ""));
            if (result.DisabledBecause is not null) return Task.FromResult((int)ExitCode.Disabled);
            return Task.FromResult(result.Actions.Any(a => a.Action is "failed" or "quarantined")
                ? (int)ExitCode.TransitionFailed : 0);
        });
        return command;
    }

    private static Command Fetch()
    {
        var release = new Argument<string>("release")
        { Description = "Kernel release as uname -r prints it, for example 6.1.0-56-cloud-amd64" };
        var headers = new Option<bool>("--headers")
        { Description = "Also fetch the headers and kbuild (to build modules)" };
        var debug = new Option<bool>("--debug")
        { Description = "Also fetch the -dbg package (vmlinux with symbols; large)" };
        var source = new Option<bool>("--source") { Description = "Also fetch the matching linux-source" };
        var json = Cli.Json();
        var command = new Command("fetch",
            "Fetch a Debian kernel (image, and on request headers, debug symbols, source) into the cache without " +
            "installing it, and verify it") { release, headers, debug, source, json };
        command.Action = Cli.Run(async parse =>
        {
            var parts = KernelParts.Image | (parse.GetValue(headers) ? KernelParts.Headers : 0) | (parse.GetValue(debug)
                ? KernelParts.Debug : 0) | (parse.GetValue(source) ? KernelParts.Source : 0);
            var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot, Cli.Progress);
            var kernel = await archive.FetchAsync(ParseRelease(parse.GetValue(release)!), parts);
            if (parse.GetValue(json)) { Cli.WriteJson(kernel, CliJson.Default.FetchedKernel); return 0; }
            Console.WriteLine($"release:   {kernel.Target.Release}");
            Console.WriteLine($"package:   {kernel.Target.PackageVersion}");
            Console.WriteLine($"build-id:  {kernel.Target.BuildId}");
            Console.WriteLine($"parts:     {kernel.Parts}");
            Console.WriteLine($"root:      {kernel.Root}");
            foreach (var warning in kernel.Warnings) Console.WriteLine($"warning:   {warning}");
            return 0;
        });
        return command;
    }

    private static Command Prepare()
    {
        var release = new Argument<string>("release") { Description = "Kernel release as uname -r prints it" };
        var json = Cli.Json();
        var command = new Command("prepare",
            "Fetch a kernel's exact source, configure it as the distribution built it, and run make prepare (cached; " +
            "about a minute the first time)") { release, json };
        command.Action = Cli.Run(async parse =>
        {
            var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot, Cli.Progress);
            var kernel = await archive.FetchAsync(ParseRelease(parse.GetValue(release)!),
                KernelParts.Image | KernelParts.Headers | KernelParts.Source);
            var tree = await KernelSourceTree.PrepareAsync(kernel, Cli.Progress);
            if (parse.GetValue(json))
            {
                Cli.WriteJson(new PreparedTree(kernel.Target.Release.Value,
                kernel.Target.BuildId.ToString(), tree.Directory), CliJson.Default.PreparedTree); return 0;
            }
            Console.WriteLine($"{kernel.Target}: source tree prepared in {tree.Directory}");
            return 0;
        });
        return command;
    }

    private static Command Build()
    {
        var target = new Option<string>("--target")
        {
            Description =
            "The exact kernel: a Debian release as uname -r prints it (for example 6.1.0-56-cloud-amd64), 'running', " +
            "or a target directory (source/, System.map, vmlinux or vmlinuz, modules/; see docs/cli.md)",
            Required = true
        };
        var patches = new Option<FileInfo[]>("--patch")
        {
            Description =
            "A fix as a unified diff or git format-patch file, against the kernel source tree's root (repeatable, " +
            "applied in order)",
            Required = true,
            AllowMultipleArgumentsPerToken = false
        };
        var name = new Option<string?>("--name")
        {
            Description =
            "The livepatch's name (module NAME_LEVEL.ko); defaults to the base's name or the first patch's file name"
        };
        var cves = new Option<string[]>("--cve")
        { Description = "A CVE the fix closes, CVE-YYYY-N (repeatable)", AllowMultipleArgumentsPerToken = false };
        var baseLevel = new Option<DirectoryInfo?>("--base")
        {
            Description =
            "The output directory of the previous level: build the next level, carrying all its fixes, to replace it " +
            "atomically"
        };
        var output = new Option<DirectoryInfo>("--output", "-o")
        { Description = "Where to write the module, manifest.json and the patches", Required = true };
        var skipFidelity = new Option<bool>("--skip-fidelity")
        { Description = "Build even when the compiled original does not match the shipped code (not recommended)" };
        var maxUnits = new Option<int>("--max-units")
        {
            Description = "Refuse a header fix that rebuilds more translation units than this",
            DefaultValueFactory = _ => 40
        };
        var signKey = new Option<FileInfo?>("--sign-key")
        {
            Description =
            "Sign the module with this PEM private key, in the kernel's module signature format (scripts/sign-file " +
            "of the target)"
        };
        var signCert = new Option<FileInfo?>("--sign-cert")
        {
            Description =
            "The signing key's X.509 certificate, PEM or DER (default: the certificate inside the --sign-key file)"
        };
        var signHash = new Option<string>("--sign-hash")
        { Description = "The signature's hash: sha256, sha384 or sha512", DefaultValueFactory = _ => "sha256" };
        var json = Cli.Json();
        var command = new Command("build",
            "Build a livepatch module from source fixes for an exact kernel: compile only the touched units, prove " +
            "them against the shipped code, diff, resolve, link, optionally sign")
            { target, patches, name, cves, baseLevel, output, skipFidelity, maxUnits, signKey, signCert, signHash,
                json };
        command.Action = Cli.Run(async (parse, cancellation) =>
        {
            var requested = parse.GetValue(target)!;
            TargetReference reference = requested == "running"
                ? new TargetReference.Debian(ParseRelease(File.ReadAllText("/proc/sys/kernel/osrelease").Trim()))
                : Directory.Exists(requested) ? new TargetReference.TargetDirectory(Path.GetFullPath(requested))
                : new TargetReference.Debian(ParseRelease(requested));
            foreach (var cve in parse.GetValue(cves) ?? [])
                if (!System.Text.RegularExpressions.Regex.IsMatch(cve, @"^CVE-\d{4}-\d{4,}$"))
                    throw new SourcePatchException($"'{cve}' is not a CVE id (expected CVE-YYYY-NNNN)");
            var request = new KernelBuildRequest(reference, [.. parse.GetValue(patches)!.Select(p => p.FullName)],
                parse.GetValue(name), parse.GetValue(cves) ?? [],
                parse.GetValue(baseLevel)?.FullName, parse.GetValue(output)!.FullName, parse.GetValue(skipFidelity),
                    parse.GetValue(maxUnits),
                parse.GetValue(signKey) is { } key
                    ? new Kintsugi.Kernel.Build.Livepatch.ModuleSigningKey(key.FullName,
                    (parse.GetValue(signCert) ?? key).FullName, parse.GetValue(signHash)!)
                    : parse.GetValue(signCert) is not null ? throw new UsageException("--sign-cert needs --sign-key")
                        : null);
            var cache = DebianKernelArchive.DefaultCacheRoot;
            var builder = new KernelPatchBuilder(new DebianKernelArchive(cache, Cli.Progress), LabCommands.Machine,
                Cli.Progress);
            var result = await builder.BuildAsync(request, cancellation);
            if (parse.GetValue(json)) Cli.WriteJson(result, CliJson.Default.KernelBuildResult);
            else
            {
                Console.WriteLine(result.Message);
                if (result.Module is not null)
                {
                    Console.WriteLine($"module:   {result.Module}");
                    Console.WriteLine($"manifest: {result.ManifestPath}");
                    if (result.Manifest?.Signer is { } signer)
                        Console.WriteLine($"signed:   {signer.Hash} by {signer.Subject} (certificate sha256 " +
                        $"{signer.CertificateSha256})");
                }
                Console.WriteLine("stages:   "
                    + string.Join(", ", result.Stages.Select(s => $"{s.Stage} {s.Seconds:0.0} s")));
            }
            return result.Outcome == BuildOutcome.Built ? 0 : (int)ExitCode.NothingToDo;
        });
        return command;
    }

    private static Command CatchUp()
    {
        var target = new Option<string>("--target")
        { Description = "The running kernel's exact release (uname -r), or 'running'", Required = true };
        var to = new Option<string>("--to")
        {
            Description =
            "The newer Debian version of the same kernel line's linux-source, for example 6.1.187-1 (apt-cache " +
            "madison linux-source-6.1)",
            Required = true
        };
        var output = new Option<DirectoryInfo>("--output", "-o")
        {
            Description =
            "Where to write the module (module/), the report (catch-up.json, catch-up.txt) and the resumable state",
            Required = true
        };
        var name = new Option<string?>("--name")
        { Description = "The livepatch's name (default catchup_VERSION, or the base's name)" };
        var baseLevel = new Option<DirectoryInfo?>("--base")
        {
            Description =
            "The module directory of the previous level (OUTPUT/module of an earlier catch-up or a kernel build): " +
            "the new module replaces it atomically"
        };
        var maxUnits = new Option<int>("--max-units")
        {
            Description = "Refuse a header change compiled into more built units than this",
            DefaultValueFactory = _ => 40
        };
        var only = new Option<string[]>("--only")
        {
            Description = "Build only changed files under this path prefix (repeatable); the others are reported as " +
                "outside the scope",
            AllowMultipleArgumentsPerToken = false,
        };
        var json = Cli.Json();
        var command = new Command("catch-up",
            "Build the security content of a newer linux-source version of the running kernel's line as one " +
            "livepatch, with a report of the CVEs it covers and those that still need a reboot")
            { target, to, output, name, baseLevel, maxUnits, only, json };
        command.Action = Cli.Run(async (parse, cancellation) =>
        {
            var requested = parse.GetValue(target)!;
            var release = ParseRelease(requested == "running" ? File.ReadAllText("/proc/sys/kernel/osrelease").Trim()
                : requested);
            var cache = DebianKernelArchive.DefaultCacheRoot;
            var request = new Kintsugi.Kernel.CatchUp.CatchUpRequest(release, parse.GetValue(to)!,
                parse.GetValue(output)!.FullName, parse.GetValue(name),
                parse.GetValue(baseLevel)?.FullName, parse.GetValue(maxUnits), parse.GetValue(only) ?? []);
            var result = await new Kintsugi.Kernel.CatchUp.KernelCatchUp(new DebianKernelArchive(cache, Cli.Progress),
                cache, LabCommands.Machine, Cli.Progress)
                .RunAsync(request, cancellation);
            if (parse.GetValue(json)) Console.WriteLine(System.Text.Encoding.UTF8.GetString(result.Report.ToUtf8()));
            else
            {
                Console.Write(result.Report.ToText());
                Console.WriteLine($"report:   {result.ReportPath}");
                Console.WriteLine($"          {result.TextReportPath}");
            }
            return (int)result.ExitCode;
        });
        return command;
    }

    private static Command Test()
    {
        var module = new Argument<FileInfo>("module.ko") { Description = "The livepatch module to prove" };
        var target = new Option<string>("--target")
        { Description = "The exact kernel release it was built for", Required = true };
        var check = new Option<FileInfo?>("--check")
        { Description = "A shell script that fails without the fix and succeeds with it" };
        var timeout = new Option<int>("--timeout")
        { Description = "Seconds for the whole lab run", DefaultValueFactory = _ => 300 };
        var add = new Option<string[]>("--add")
        {
            Description =
            "HOSTPATH:GUESTPATH: a file the check needs in the guest, such as a helper program (repeatable)",
            AllowMultipleArgumentsPerToken = false
        };
        var json = Cli.Json();
        var command = new Command("test",
            "Boot the target kernel in the lab and prove the module: the check fails before the load, passes while " +
            "loaded, fails after the unload; no oops, warning or new taint")
            { module, target, check, timeout, add, json };
        command.Action = Cli.Run(async parse =>
        {
            var result = await new Kintsugi.Lab.PatchVerification(LabCommands.Machine())
                .RunAsync(ParseRelease(parse.GetValue(target)!), parse.GetValue(module)!.FullName,
                    parse.GetValue(check)?.FullName, TimeSpan.FromSeconds(parse.GetValue(timeout)),
                    [.. (parse.GetValue(add) ?? []).Select(Kintsugi.Lab.GuestFile.Parse)]);
            if (parse.GetValue(json)) Cli.WriteJson(result, CliJson.Default.PatchTestResult);
            else
            {
                foreach (var step in result.Steps)
                    Console.WriteLine($"{(step.Passed ? "ok  " : "FAIL")} {step.Name}: expected it {step.Expected}, " +
                    $"exit status {step.ExitCode}");
                foreach (var problem in result.TaintProblems) Console.WriteLine($"FAIL new taint: {problem}");
                foreach (var problem in result.LogProblems) Console.WriteLine($"FAIL kernel log: {problem}");
                Console.WriteLine($"{result.Verdict.ToUpperInvariant()}: {result.Module} on {result.Kernel} " +
                    $"({result.Seconds:0.0} s)");
            }
            return result.Verdict == "pass" ? 0 : (int)ExitCode.TestFailed;
        });
        return command;
    }

    public static KernelRelease ParseRelease(string text) =>
        KernelRelease.TryParse(text, out var release) ? release
            : throw new KernelArchiveException($"'{text}' is not a kernel release (expected what uname -r prints, " +
            "for example 6.1.0-56-cloud-amd64)", ExitCode.Usage);

    private static string Yes(bool value) => value ? "yes" : "no";
}
