using System.Text;
using System.Text.RegularExpressions;
using Kintsugi.Elf;
using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// A livepatch of module code binds what that code uses from other modules when the patched module loads, so it
/// depends on no module: built from two corpus fixes (bridge calling llc's exports; binfmt_misc, a module of one
/// object, whose compiled unit carries objtool's tables on IBT kernels), it loads with none of those modules present,
/// applies when they are inserted after it, unloads, loads again over them, and unloads with a clean kernel log
/// (on 6.12: no "Unpatched return thunk in use" from the generated module's own exit function). A patch of modules
/// only carries a vmlinux object without functions, for the uname callbacks: loaded with the opt-in, it shows the
/// effective version while applied. One build and one boot per kernel.
/// </summary>
public abstract partial class ModuleBindingSpecification(KernelRelease release)
{
    private static readonly string[] FixNames = ["module-uses-other-module", "module-function"];

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<KernelRelease, Lazy<Task<Outcome>>>
        Outcomes = new();

    private Task<Outcome> OutcomeAsync() =>
        Outcomes.GetOrAdd(release, r => new Lazy<Task<Outcome>>(() => RunAsync(r))).Value;

    private sealed record Outcome(LabRunResult Run, string Depends, Kintsugi.Kernel.Build.BuildManifest Manifest,
        IReadOnlyList<string> KlpSections)
    {
        public string Marker(string name)
        {
            var match = Regex.Match(Run.Output, $"^@{Regex.Escape(name)}=(\\S*)$", RegexOptions.Multiline);
            return match.Success ? match.Groups[1].Value
                : throw new InvalidOperationException($"no @{name}= in:\n{Run.Output}\n{Run.Console}");
        }
    }

    private static async Task<Outcome> RunAsync(KernelRelease release)
    {
        var directory = new TemporaryDirectory();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => directory.Dispose();
        var fixes = FixNames.Select(CorpusFix.Named).ToList();
        var built = await FixCorpusRun.Builder().BuildAsync(new KernelBuildRequest(new TargetReference.Debian(release),
            [.. fixes.Select(f => f.PatchFor(release))], "modbind", [], null, Path.Combine(directory.Path, "out")));
        Assert.Equal(BuildOutcome.Built, built.Outcome);
        var elf = ElfObject.Load(built.Module!);
        var modinfo = Encoding.ASCII.GetString(((ElfDataSection)elf.FindSection(".modinfo")!).Data).Split('\0');
        var depends = modinfo.Where(e => e.StartsWith("depends=", StringComparison.Ordinal))
            .Select(e => e["depends=".Length..]).SingleOrDefault() ?? "";
        var klp = elf.Sections.Where(s => s.Name.StartsWith(".klp.rela.", StringComparison.Ordinal)).Select(s => s.Name)
            .ToList();

        var lab = await KernelUnderTest.GetAsync(release);
        List<GuestFile> files =
        [
            new(built.Module!, "/t/patch.ko"),
            .. fixes.Select(f => new GuestFile(f.Check, $"/t/{f.Name}.sh")),
            .. await FixCorpusRun.ModuleFilesAsync(lab.Kernel, fixes, directory.Path),
        ];
        var name = built.Manifest!.Module;
        var script = $"""
            checks() {"{"} for f in {string.Join(' ', FixNames)}; do timeout 30 sh /t/$f.sh > /dev/null 2>&1; echo "@$1-$f=$?"; done; {"}"}
            echo "@modules-first=$(cut -d' ' -f1 /proc/modules | grep -cE '^(bridge|stp|llc|binfmt_misc)$')"
            kintsugi kernel load /t/patch.ko > /dev/null; echo "@load-first=$?"
            checks patched-first
            kintsugi kernel unload {name} > /dev/null; echo "@unload-first=$?"
            checks unpatched
            echo "@uname-real=$(uname -v | tr ' ' '_')"
            kintsugi kernel load --effective-uname /t/patch.ko > /dev/null; echo "@load-again=$?"
            checks patched-again
            echo "@objects=$(ls /sys/kernel/livepatch/{name} | grep -xE 'vmlinux|bridge|binfmt_misc' | sort | tr '\n' ',')"
            echo "@uname-patched=$(uname -v | tr ' ' '_')"
            kintsugi kernel unload {name} > /dev/null; echo "@unload-again=$?"
            echo "@uname-after=$(uname -v | tr ' ' '_')"
            echo "@kernel-log"; dmesg
            """;
        var run = await lab.Lab.RunAsync(new LabRunSpec(release, script, files, TimeSpan.FromMinutes(8)));
        Assert.False(run.TimedOut, run.Console);
        return new Outcome(run, depends, built.Manifest, klp);
    }

    [Fact]
    public async Task Exports_of_other_modules_are_livepatch_relocations_applied_with_the_patched_module()
    {
        var outcome = await OutcomeAsync();

        Assert.Equal("", outcome.Depends);
        Assert.Contains(outcome.KlpSections, s => s.StartsWith(".klp.rela.bridge.", StringComparison.Ordinal));
        Assert.Contains(outcome.Manifest.Symbols,
            s => s is { Object: "llc", Name: "llc_sap_find" } && s.Binding == "export of module llc");
        Assert.Contains(outcome.Manifest.Symbols, s => s is { Object: "llc", Name: "llc_sap_close" });
    }

    [Fact]
    public async Task The_patch_loads_before_the_patched_module_and_its_dependencies_and_applies_when_they_load()
    {
        var outcome = await OutcomeAsync();

        Assert.Equal("0", outcome.Marker("modules-first"));
        Assert.Equal("0", outcome.Marker("load-first"));
        Assert.All(FixNames, f => Assert.Equal("0", outcome.Marker($"patched-first-{f}")));
        Assert.Equal("0", outcome.Marker("unload-first"));
        Assert.All(FixNames, f => Assert.NotEqual("0", outcome.Marker($"unpatched-{f}")));
    }

    [Fact]
    public async Task The_patch_loads_after_the_modules_and_applies_to_them()
    {
        var outcome = await OutcomeAsync();

        Assert.Equal("0", outcome.Marker("load-again"));
        Assert.All(FixNames, f => Assert.Equal("0", outcome.Marker($"patched-again-{f}")));
        Assert.Equal("0", outcome.Marker("unload-again"));
    }

    [Fact]
    public async Task A_patch_of_modules_only_carries_a_vmlinux_object_whose_callbacks_show_the_effective_version()
    {
        var outcome = await OutcomeAsync();

        // No vmlinux function changes, yet the kernel registers a vmlinux object: the uname callbacks hang on it.
        Assert.DoesNotContain(outcome.Manifest.Functions, f => f.Object == "vmlinux");
        Assert.Equal("binfmt_misc,bridge,vmlinux,", outcome.Marker("objects"));
        var real = outcome.Marker("uname-real");
        var package = outcome.Manifest.Target.PackageVersion;
        var effective = $"{package}+kintsugi{outcome.Manifest.Level}";
        var full = real.Replace($"Debian_{package}_", $"Debian_{effective}_", StringComparison.Ordinal);
        // The kernel keeps 64 bytes: a longer string (6.12's backport) drops the build date, never part of the version.
        var shown = full.Length <= 64 ? full
            : real[..(real.IndexOf("Debian_", StringComparison.Ordinal) + "Debian_".Length)] + effective;
        Assert.Equal(shown, outcome.Marker("uname-patched"));
        Assert.NotEqual(real, outcome.Marker("uname-patched"));
        Assert.Equal(real, outcome.Marker("uname-after"));
    }

    [Fact]
    public async Task Loading_and_unloading_leave_the_kernel_log_clean_with_every_return_thunk_patched()
    {
        var outcome = await OutcomeAsync();
        var log = GuestOutput.Section(outcome.Run.Output, "kernel-log");

        Assert.DoesNotContain("Unpatched return thunk", log, StringComparison.Ordinal);
        Assert.DoesNotContain(log.Split('\n'), KernelLog.IsProblem);
    }
}

[Collection("6.1 cloud kernel")]
public sealed class ModuleBindingOn61CloudKernel()
    : ModuleBindingSpecification(TestKernels.Debian12Cloud61);

[Collection("6.12 cloud kernel")]
public sealed class ModuleBindingOn612CloudKernel()
    : ModuleBindingSpecification(TestKernels.Debian12Cloud612);
