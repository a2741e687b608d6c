using System.Text;
using System.Text.RegularExpressions;
using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// The builder's fix corpus (tests/fixtures/fixes, README there), proven in the real kernel of each supported
/// line. Refused and nothing-to-do fixes are asserted from the build alone. The buildable fixes are built as
/// two cumulative levels (level 2 on top of level 1's output) and proven in one boot: every check fails
/// before any load; level 1 makes its own checks pass and no other; level 2 replaces level 1 atomically and
/// makes every check pass, a module fix included when that module is loaded only after the patch; after level
/// 2 is unloaded every check fails again; and the kernel reports no oops, warning or new problem taint.
/// </summary>
public abstract partial class FixCorpusSpecification<TRun>(TRun run) where TRun : FixCorpusRun
{
    protected abstract KernelRelease Release { get; }

    /// <summary>Whether the kernel has /sys/kernel/livepatch/PATCH/replace (6.12 has it, 6.1 and 5.10 do
    /// not).</summary>
    protected virtual bool HasReplaceAttribute => true;

    /// <summary>Whether the kernel has /sys/kernel/livepatch/PATCH/OBJECT/patched (6.1 and 6.12 have it, 5.10 does
    /// not).</summary>
    protected virtual bool HasPatchedAttribute => true;

    public static TheoryData<string> Fixes(FixOutcome outcome) =>
        [.. CorpusFix.All.Where(f => f.Outcome == outcome).Select(f => f.Name)];

    public static TheoryData<string> Refused => Fixes(FixOutcome.Refused);
    public static TheoryData<string> NothingToDo => Fixes(FixOutcome.NothingToDo);
    public static TheoryData<string> Buildable => Fixes(FixOutcome.Builds);

    [LineTheory]
    [MemberData(nameof(Refused))]
    public async Task A_fix_that_cannot_be_live_patched_is_refused_by_its_rule(string name)
    {
        var fix = CorpusFix.Named(name);
        using var directory = new TemporaryDirectory();

        var refused = await Assert.ThrowsAsync<LivepatchRefusedException>(() => FixCorpusRun.Builder().BuildAsync(
            new KernelBuildRequest(new TargetReference.Debian(Release), [fix.PatchFor(Release)], fix.Name, [], null,
                Path.Combine(directory.Path, "out"))));

        Assert.Contains(fix.Rule!, refused.Rules.Select(r => r.ToString()));
        if (fix.Mentions is { } mentions) Assert.Contains(mentions, refused.Message, StringComparison.Ordinal);
        Assert.False(Directory.EnumerateFiles(directory.Path, "*.ko", SearchOption.AllDirectories).Any(),
            "a refused fix left a module behind");
    }

    [LineTheory]
    [MemberData(nameof(NothingToDo))]
    public async Task A_fix_that_changes_no_machine_code_builds_nothing_and_says_why(string name)
    {
        var fix = CorpusFix.Named(name);
        using var directory = new TemporaryDirectory();

        var result = await FixCorpusRun.Builder().BuildAsync(
            new KernelBuildRequest(new TargetReference.Debian(Release), [fix.PatchFor(Release)], fix.Name, [], null,
                Path.Combine(directory.Path, "out")));

        Assert.Equal(BuildOutcome.NothingToDo, result.Outcome);
        Assert.Null(result.Module);
        Assert.Contains(fix.Mentions ?? "nothing to live patch", result.Message, StringComparison.Ordinal);
    }

    [LineFact]
    public async Task Every_check_fails_before_any_patch_is_loaded()
    {
        var outcome = await run.OutcomeAsync();
        Assert.All(outcome.Fixes, f =>
            Assert.True(outcome.Check("before", f.Name) != 0, $"{f.Name}: its check passed on the unpatched kernel"));
    }

    [LineFact]
    public async Task Level_1_makes_exactly_its_own_fixes_pass()
    {
        var outcome = await run.OutcomeAsync();
        Assert.True(outcome.Marker("load1") == "0", outcome.Describe("loading level 1 failed"));
        Assert.All(outcome.Fixes, f => Assert.True((outcome.Check("level1", f.Name) == 0) == (f.Level == 1),
            $"{f.Name} (level {f.Level}): check exited {outcome.Check("level1", f.Name)} with level 1 loaded"));
    }

    [LineFact]
    public async Task Level_2_replaces_level_1_atomically_and_makes_every_fix_pass()
    {
        var outcome = await run.OutcomeAsync();
        Assert.True(outcome.Marker("load2") == "0", outcome.Describe("loading level 2 failed"));
        Assert.Equal([outcome.Level2Name],
            outcome.Section("livepatches").Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain(outcome.Level1Name, outcome.Section("modules-after-level2"), StringComparison.Ordinal);
        Assert.All(outcome.Fixes, f => Assert.True(outcome.Check("level2", f.Name) == 0,
            $"{f.Name}: check exited {outcome.Check("level2", f.Name)} with level 2 loaded"));
    }

    [LineFact]
    public async Task A_module_fix_applies_when_the_module_is_loaded_after_the_patch()
    {
        var outcome = await run.OutcomeAsync();
        var modular = outcome.Fixes.Where(f => f.Module is not null).ToList();
        Assert.NotEmpty(modular);
        foreach (var fix in modular)
        {
            // Removed before level 2 was loaded, inserted again by its check while level 2 was applied.
            Assert.Equal("0", outcome.Marker($"removed-{fix.Module}"));
            Assert.Equal(0, outcome.Check("level2", fix.Name));
            Assert.Contains(fix.Module!, outcome.Section("modules-after-level2"), StringComparison.Ordinal);
        }
    }

    [LineFact]
    public async Task A_module_fix_s_dependencies_are_absent_too_when_the_patch_loads_and_depends_on_no_module()
    {
        var outcome = await run.OutcomeAsync();
        var lab = await KernelUnderTest.GetAsync(Release);
        var closure = new KernelModuleClosure(lab.Kernel.ModulesDirectory);
        var dependencies = outcome.Fixes.Select(f => f.Module).OfType<string>()
            .SelectMany(m => closure.Resolve([m]).Select(KernelModuleClosure.NameOf).Where(d => d != m)).ToList();
        Assert.NotEmpty(dependencies);
        Assert.All(dependencies, d => Assert.Equal("0", outcome.Marker($"removed-{d}")));
        Assert.True(outcome.Marker("load2") == "0", outcome.Describe("loading level 2 failed"));
        Assert.Equal("", outcome.Level2Depends);
    }

    [LineFact]
    public async Task Unloading_the_last_level_makes_every_check_fail_again()
    {
        var outcome = await run.OutcomeAsync();
        Assert.True(outcome.Marker("unload2") == "0", outcome.Describe("unloading level 2 failed"));
        Assert.All(outcome.Fixes, f =>
            Assert.True(outcome.Check("after", f.Name) != 0, $"{f.Name}: its check still passed after the unload"));
    }

    [LineFact]
    public async Task The_kernel_reports_no_oops_warning_or_new_problem_taint_throughout()
    {
        var outcome = await run.OutcomeAsync();
        Assert.NotNull(outcome.Run.ExitCode);
        var before = new Taint(ulong.Parse(outcome.Marker("taint-before")));
        var after = new Taint(ulong.Parse(outcome.Marker("taint-after")));
        Assert.Empty(after.ProblemsAddedSince(before));
        Assert.DoesNotContain(outcome.Section("kernel-log").Split('\n'), KernelLog.IsProblem);
    }

    [LineFact]
    public async Task Kernel_list_reports_the_replace_and_patched_attributes_as_this_kernel_has_them()
    {
        var outcome = await run.OutcomeAsync();
        var attributes = outcome.Section("sysfs-level2").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(HasReplaceAttribute, attributes.Contains("replace"));
        Assert.Equal(HasPatchedAttribute, attributes.Contains("vmlinux/patched"));

        using var list = System.Text.Json.JsonDocument.Parse(outcome.Section("list-level2"));
        var patch = Assert.Single(list.RootElement.EnumerateArray());
        Assert.Equal(outcome.Level2Name, patch.GetProperty("name").GetString());
        Assert.Equal(HasReplaceAttribute ? "true" : "null", patch.GetProperty("replace").GetRawText());
        Assert.All(patch.GetProperty("objects").EnumerateArray(), o =>
            Assert.Equal(HasPatchedAttribute ? "true" : "null", o.GetProperty("patched").GetRawText()));
    }

    /// <summary>
    /// static-local-clone's function calls trace_oom_score_adj_update: a static branch on the tracepoint's key and a
    /// static call of its probes, both keys of vmlinux. With level 2 applied, only the livepatch's copy runs, so the
    /// event is recorded only if the kernel flipped the livepatch's own jump entry and static call site.
    /// </summary>
    [LineFact]
    public async Task A_tracepoint_in_patched_code_fires_through_the_livepatchs_static_branch_and_static_call()
    {
        var outcome = await run.OutcomeAsync();
        Assert.Contains(outcome.Level2StaticCallKeys,
            k => k.Contains("__SCK__tp_func_oom_score_adj_update", StringComparison.Ordinal));
        Assert.Equal("0", outcome.Marker("trace-enabled"));
        // echo 4 > oom_adj: 4 * OOM_SCORE_ADJ_MAX / 17.
        Assert.Contains("oom_score_adj=235", outcome.Section("trace-level2"), StringComparison.Ordinal);
    }

    /// <summary>Each buildable fix on its own, through <c>kernel test</c>'s verification (slow: one build and one boot
    /// each).</summary>
    [EachFixTheory]
    [MemberData(nameof(Buildable))]
    public async Task Each_fix_alone_builds_and_passes_kernel_test(string name)
    {
        var fix = CorpusFix.Named(name);
        using var directory = new TemporaryDirectory();
        var result = await FixCorpusRun.Builder().BuildAsync(
            new KernelBuildRequest(new TargetReference.Debian(Release), [fix.PatchFor(Release)], fix.Name, [], null,
                Path.Combine(directory.Path, "out")));
        Assert.Equal(BuildOutcome.Built, result.Outcome);

        var lab = await KernelUnderTest.GetAsync(Release);
        var verdict = await new PatchVerification(lab.Lab).RunAsync(Release, result.Module!, fix.Check,
            TimeSpan.FromMinutes(5), await FixCorpusRun.ModuleFilesAsync(lab.Kernel, [fix], directory.Path));
        Assert.True(verdict.Verdict == "pass", string.Join('\n', verdict.Steps.Select(s => $"{s.Name}: {s.ExitCode}")
            .Concat(verdict.LogProblems).Concat(verdict.TaintProblems)));
    }
}

/// <summary>A theory run only with <c>KINTSUGI_FIX_CORPUS=each</c> (too slow for CI: one build and one boot per
/// fix).</summary>
public sealed class EachFixTheoryAttribute : LineTheoryAttribute
{
    public const string Variable = "KINTSUGI_FIX_CORPUS";

    public EachFixTheoryAttribute()
    {
        if (Environment.GetEnvironmentVariable(Variable) != "each")
            Skip = $"one build and one boot per fix: run with {Variable}=each";
    }
}

/// <summary>What the one boot of a kernel's corpus run printed, read by section.</summary>
public sealed class CorpusRunOutcome(LabRunResult run, IReadOnlyList<CorpusFix> fixes, string level1Name,
    string level2Name, string level2Depends, IReadOnlyList<string> level2StaticCallKeys)
{
    /// <summary>The symbols the key fields of level 2's <c>.static_call_sites</c> relocate against.</summary>
    public IReadOnlyList<string> Level2StaticCallKeys { get; } = level2StaticCallKeys;

    /// <summary>The <c>depends=</c> of level 2's .modinfo: the modules the module loader would require first.</summary>
    public string Level2Depends { get; } = level2Depends;
    public LabRunResult Run { get; } = run;
    public IReadOnlyList<CorpusFix> Fixes { get; } = fixes;
    public string Level1Name { get; } = level1Name;
    public string Level2Name { get; } = level2Name;

    public string Section(string name) => GuestOutput.Section(Run.Output, name);

    /// <summary>A failure message with what the guest printed and the end of its kernel log.</summary>
    public string Describe(string what) =>
        $"{what}:\n{Run.Output[..Math.Max(0, Run.Output.IndexOf("@kernel-log", StringComparison.Ordinal))]}\n" +
        string.Join('\n', Section("kernel-log").Split('\n').TakeLast(25));

    public string Marker(string name)
    {
        var match = Regex.Match(Run.Output, $"^@{Regex.Escape(name)}=(\\S*)$", RegexOptions.Multiline);
        return match.Success ? match.Groups[1].Value
            : throw new InvalidOperationException($"no @{name}= in the guest's output:\n{Run.Output}\n{Run.Console}");
    }

    /// <summary>The exit status of a fix's check in a phase (before, level1, level2, after).</summary>
    public int Check(string phase, string fix)
    {
        var match = Regex.Match(Section(phase), $"^{Regex.Escape(fix)}=(\\d+)$", RegexOptions.Multiline);
        return match.Success ? int.Parse(match.Groups[1].Value)
            : throw new InvalidOperationException($"no result for {fix} in @{phase}:\n{Section(phase)}");
    }
}

/// <summary>Builds a kernel's two cumulative levels of the corpus once and boots them once; shared by that kernel's
/// specifications.</summary>
public abstract class FixCorpusRun(KernelRelease release) : IDisposable
{
    private readonly Lazy<Task<CorpusRunOutcome>> _outcome = new(() => RunAsync(release));
    private static readonly string WorkRoot = Path.Combine(Path.GetTempPath(),
        "kintsugi-fix-corpus-" + Environment.ProcessId);

    /// <summary>The built levels are only needed while this kernel's specifications run.</summary>
    public void Dispose()
    {
        var work = Path.Combine(WorkRoot, release.Value);
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        GC.SuppressFinalize(this);
    }

    public Task<CorpusRunOutcome> OutcomeAsync() => _outcome.Value;

    public static KernelPatchBuilder Builder()
    {
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        return new KernelPatchBuilder(archive, () => new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot,
            Repository.KintsugiBinary, _ => { }), _ => { });
    }

    /// <summary>
    /// The modules the fixes' checks insert, with the modules they depend on, as the guest finds them:
    /// /fixtures/modules/NAME.ko (decompressed).
    /// </summary>
    public static async Task<IReadOnlyList<GuestFile>> ModuleFilesAsync(FetchedKernel kernel,
        IEnumerable<CorpusFix> fixes, string scratch)
    {
        var closure = new KernelModuleClosure(kernel.ModulesDirectory);
        var files = new List<GuestFile>();
        var modules = fixes.Select(f => f.Module).OfType<string>().Distinct(StringComparer.Ordinal).ToList();
        Assert.All(modules,
            m => Assert.False(closure.IsBuiltin(m), $"{m} is built in; the corpus expects a loadable module"));
        foreach (var path in closure.Resolve(modules).Distinct(StringComparer.Ordinal))
        {
            var module = KernelModuleClosure.NameOf(path);
            var source = Path.Combine(kernel.ModulesDirectory, path);
            var host = Path.Combine(scratch, module + ".ko");
            if (source.EndsWith(".xz", StringComparison.Ordinal))
            {
                var unpacked = await ExternalCommand.RunAsync("sh",
                    ["-c", "xz -dc \"$1\" > \"$2\"", "sh", source, host]);
                Assert.True(unpacked.Succeeded, unpacked.StandardError);
            }
            else File.Copy(source, host, overwrite: true);
            files.Add(new GuestFile(host, $"/fixtures/modules/{module}.ko"));
        }
        return files;
    }

    private static string ModuleDepends(string module)
    {
        var modinfo = (Kintsugi.Elf.ElfDataSection)Kintsugi.Elf.ElfObject.Load(module).FindSection(".modinfo")!;
        return System.Text.Encoding.ASCII.GetString(modinfo.Data).Split('\0')
            .Where(e => e.StartsWith("depends=", StringComparison.Ordinal)).Select(e => e["depends=".Length..])
            .SingleOrDefault() ?? "";
    }

    private static List<string> StaticCallKeys(string module)
    {
        var elf = Kintsugi.Elf.ElfObject.Load(module);
        if (elf.FindSection(".static_call_sites") is not { } sites) return [];
        // Each 8-byte entry: the call's address at 0, its key at 4.
        return [.. elf.GetRelocationSections(sites).SelectMany(r => r.Relocations)
            .Where(r => r.Offset % 8 == 4).Select(r => r.Symbol?.Name ?? "")];
    }

    private static async Task<CorpusRunOutcome> RunAsync(KernelRelease release)
    {
        var work = Path.Combine(WorkRoot, release.Value);
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        Directory.CreateDirectory(work);
        var fixes = CorpusFix.All.Where(f => f.Outcome == FixOutcome.Builds).ToList();
        var builder = Builder();

        var level1 = await builder.BuildAsync(new KernelBuildRequest(new TargetReference.Debian(release),
            [.. fixes.Where(f => f.Level == 1).Select(f => f.PatchFor(release))], "corpus", [], null,
            Path.Combine(work, "level1")));
        Assert.Equal(BuildOutcome.Built, level1.Outcome);
        var level2 = await builder.BuildAsync(new KernelBuildRequest(new TargetReference.Debian(release),
            [.. fixes.Where(f => f.Level == 2).Select(f => f.PatchFor(release))], null, [],
            Path.Combine(work, "level1"), Path.Combine(work, "level2")));
        Assert.Equal(BuildOutcome.Built, level2.Outcome);
        Assert.Equal(2, level2.Manifest!.Level);

        var lab = await KernelUnderTest.GetAsync(release);
        List<GuestFile> files =
        [
            new(level1.Module!, "/corpus/level1.ko"),
            new(level2.Module!, "/corpus/level2.ko"),
            .. fixes.Select(f => new GuestFile(f.Check, $"/corpus/checks/{f.Name}.sh")),
            .. await ModuleFilesAsync(lab.Kernel, fixes, work),
        ];
        var script = new StringBuilder();
        script.AppendLine("""
            checks() { for c in /corpus/checks/*.sh; do n=${c##*/}; timeout 30 sh "$c" > /dev/null 2>&1; echo "${n%.sh}=$?"; done; }
            echo "@taint-before=$(cat /proc/sys/kernel/tainted)"
            echo "@before"; checks
            kintsugi kernel load /corpus/level1.ko > /dev/null; echo "@load1=$?"
            echo "@level1"; checks
            """);
        // The module fixes' modules, and the modules they depend on, are removed here, so that level 2 finds them
        // absent and their checks insert them again: a livepatch must load before the patched module and its
        // dependencies.
        var closure = new KernelModuleClosure(lab.Kernel.ModulesDirectory);
        foreach (var module in fixes.Select(f => f.Module).OfType<string>().Distinct(StringComparer.Ordinal))
        {
            if (module == "binfmt_misc") script.AppendLine("umount /proc/sys/fs/binfmt_misc 2> /dev/null");
            if (module == "bridge") script.AppendLine("ip link del kbr0 2> /dev/null");
            foreach (var loaded in closure.Resolve([module]).Select(KernelModuleClosure.NameOf).Reverse())
                script.AppendLine($"rmmod {loaded}; echo \"@removed-{loaded}=$?\"");
        }
        script.AppendLine($"""
            kintsugi kernel load /corpus/level2.ko > /dev/null; echo "@load2=$?"
            echo "@livepatches"; ls /sys/kernel/livepatch
            echo "@level2"; checks
            echo "@modules-after-level2"; cut -d' ' -f1 /proc/modules
            echo "@list-level2"; kintsugi kernel list --json
            echo "@sysfs-level2"; (cd /sys/kernel/livepatch/{level2.Manifest.Module} && for f in * */*; do [ -f "$f" ] && echo "$f"; done)
            mount -t tracefs nodev /sys/kernel/tracing 2> /dev/null; t=/sys/kernel/tracing/events/oom/oom_score_adj_update
            echo 1 > $t/enable; echo "@trace-enabled=$?"; sh -c "echo 4 > /proc/self/oom_adj"; echo 0 > $t/enable
            echo "@trace-level2"; grep -o 'oom_score_adj_update:.*' /sys/kernel/tracing/trace
            kintsugi kernel unload {level2.Manifest.Module} > /dev/null; echo "@unload2=$?"
            echo "@after"; checks
            echo "@taint-after=$(cat /proc/sys/kernel/tainted)"
            echo "@kernel-log"; dmesg
            """);
        var result =
            await lab.Lab.RunAsync(new LabRunSpec(release, script.ToString(), files, TimeSpan.FromMinutes(12)));
        Assert.False(result.TimedOut, $"the corpus run on {release} timed out:\n{result.Console}");
        return new CorpusRunOutcome(result, fixes, level1.Manifest!.Module, level2.Manifest.Module,
            ModuleDepends(level2.Module!), StaticCallKeys(level2.Module!));
    }
}

public sealed class FixCorpusRun61() : FixCorpusRun(TestKernels.Debian12Cloud61);

public sealed class FixCorpusRun612() : FixCorpusRun(TestKernels.Debian12Cloud612);

public sealed class FixCorpusRun510() : FixCorpusRun(TestKernels.Debian11Cloud510);

public sealed class FixCorpusRunDebian13() : FixCorpusRun(TestKernels.Debian13Cloud612);

[Collection("6.1 cloud kernel")]
public sealed class FixCorpusOn61CloudKernel(FixCorpusRun61 run)
    : FixCorpusSpecification<FixCorpusRun61>(run),
    IClassFixture<FixCorpusRun61>
{
    protected override KernelRelease Release => TestKernels.Debian12Cloud61;
    protected override bool HasReplaceAttribute => false;
}

[Collection("6.12 cloud kernel")]
public sealed class FixCorpusOn612CloudKernel(FixCorpusRun612 run)
    : FixCorpusSpecification<FixCorpusRun612>(run),
    IClassFixture<FixCorpusRun612>
{
    protected override KernelRelease Release => TestKernels.Debian12Cloud612;
}

[Collection("5.10 cloud kernel"), BuildRootLine]
public sealed class FixCorpusOn510CloudKernel(FixCorpusRun510 run)
    : FixCorpusSpecification<FixCorpusRun510>(run),
    IClassFixture<FixCorpusRun510>
{
    protected override KernelRelease Release => TestKernels.Debian11Cloud510;
    protected override bool HasReplaceAttribute => false;
    protected override bool HasPatchedAttribute => false;
}

[Collection("Debian 13 6.12 cloud kernel"), BuildRootLine]
public sealed class FixCorpusOnDebian13CloudKernel(FixCorpusRunDebian13 run)
    : FixCorpusSpecification<FixCorpusRunDebian13>(run),
    IClassFixture<FixCorpusRunDebian13>
{
    protected override KernelRelease Release => TestKernels.Debian13Cloud612;
}
