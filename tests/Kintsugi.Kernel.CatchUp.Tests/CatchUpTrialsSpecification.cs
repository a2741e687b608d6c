using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.CatchUp.Tests;

/// <summary>
/// The trials of a catch-up on the Debian 6.1 cloud kernel, with three of the project's real fixes and one that does
/// not compile as the changed files: compiled together, each with the outcome it has on its own.
/// </summary>
public sealed class CatchUpTrialsSpecification
{
    private static readonly LinuxSourceVersion Older = new("linux-source-6.1", "1");
    private static readonly LinuxSourceVersion Newer = new("linux-source-6.1", "2");

    [Fact]
    public async Task The_fixes_of_several_C_files_compile_in_one_make_and_each_keeps_the_outcome_it_has_alone()
    {
        var (target, tree) = await Kernel61Async("trials boot nothing");
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        await ApplyAsync(tree, directory, "meminfo", "fs/proc/meminfo.c");                 // vmlinux
        await ApplyAsync(tree, directory, "module-function", "fs/binfmt_misc.c");          // module binfmt_misc
        await ApplyAsync(tree, directory, "cpuinfo", "arch/x86/kernel/cpu/proc.c");       // vmlinux
        Break(tree, directory, "fs/proc/cmdline.c");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var builds = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { })
            .Decisions.OfType<FileDecision.Build>().ToList();
        Assert.Equal(4, builds.Count);
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "2", output.Path);
        var progress = new List<string>();

        var trials = await new CatchUpTrials(target, tree, request, difference, output.Path, Record(progress))
            .RunAsync(builds, file => file.PatchSha256!, default);

        Assert.Contains("compiling the fixes of 4 C file(s) together, 64 per make", progress);
        Assert.Equal((FileOutcome.Built, "vmlinux:meminfo_proc_show"), Outcome(trials["fs/proc/meminfo.c"]));
        Assert.Equal((FileOutcome.Built, "binfmt_misc:bm_status_read"), Outcome(trials["fs/binfmt_misc.c"]));
        Assert.Equal((FileOutcome.Built, "vmlinux:show_cpuinfo"), Outcome(trials["arch/x86/kernel/cpu/proc.c"]));
        // The broken file is refused with its own compiler error, told apart in the shared make's output (it is not
        // compiled again on its own).
        var broken = trials["fs/proc/cmdline.c"];
        Assert.Equal((FileOutcome.Refused, "build"), (broken.Outcome, broken.Rule));
        Assert.Matches(@"fs/proc/cmdline\.c:\d+:\d+: error: ", broken.Reason);
        Assert.DoesNotContain("meminfo", broken.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain(progress, line => line.Contains("tried one by one", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_shared_make_in_which_every_fix_fails_refuses_each_with_its_own_error()
    {
        var (target, tree) = await Kernel61Async("nothing compiles, nothing boots");
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        Break(tree, directory, "fs/proc/cmdline.c");
        Edit(tree, directory, "fs/proc/loadavg.c", "static int loadavg_proc_show(",
            "this fix does not compile;\nstatic int loadavg_proc_show(");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var builds = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { })
            .Decisions.OfType<FileDecision.Build>().ToList();
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "2", output.Path);

        var trials = await new CatchUpTrials(target, tree, request, difference, output.Path, _ => { })
            .RunAsync(builds, file => file.PatchSha256!, default);

        foreach (var path in new[] { "fs/proc/cmdline.c", "fs/proc/loadavg.c" })
        {
            Assert.Equal((FileOutcome.Refused, "build"), (trials[path].Outcome, trials[path].Rule));
            Assert.Matches($@"{path.Replace(".", @"\.")}:\d+:\d+: error: ", trials[path].Reason);
        }
    }

    [Fact]
    public async Task A_file_that_only_adds_a_function_nothing_calls_is_refused_not_built()
    {
        var (target, tree) = await Kernel61Async("the symbol table is cached by then");
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        // As in the 6.1.187 update: xprt_add_backlog_noncongested is added for a caller in another file.
        Edit(tree, directory, "fs/proc/cmdline.c", "static int cmdline_proc_show(",
            "int kintsugi_new_helper(int x)\n{\n\treturn x * 3;\n}\n\n" +
            "static int cmdline_proc_show(");
        await ApplyAsync(tree, directory, "meminfo", "fs/proc/meminfo.c");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var builds = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { })
            .Decisions.OfType<FileDecision.Build>().ToList();
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "2", output.Path);

        var trials = await new CatchUpTrials(target, tree, request, difference, output.Path, _ => { })
            .RunAsync(builds, file => file.PatchSha256!, default);

        var added = trials["fs/proc/cmdline.c"];
        Assert.Equal((FileOutcome.Refused, "new-code-only"), (added.Outcome, added.Rule));
        Assert.Contains("kintsugi_new_helper", added.Reason, StringComparison.Ordinal);
        Assert.Equal(FileOutcome.Built, trials["fs/proc/meminfo.c"].Outcome);
    }

    [Fact]
    public async Task A_fix_that_calls_a_function_another_built_fix_adds_is_built_together_with_that_fix()
    {
        var (target, tree) = await Kernel61Async("the symbol table is cached by then");
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        // As rtnl_dev_link_net_capable in the 6.1.187 update: a header declares a new helper, one file adds it and
        // uses it, others call it (and compile only with the header's addition).
        Edit(tree, directory, "include/linux/proc_fs.h", "struct proc_dir_entry;\n",
            "struct proc_dir_entry;\n\nint kintsugi_loadavg_shift(void);\n");
        Edit(tree, directory, "fs/proc/loadavg.c", """
            static int loadavg_proc_show(struct seq_file *m, void *v)
            {
            	unsigned long avnrun[3];

            	get_avenrun(avnrun, FIXED_1/200, 0);
            """, """
            /* Not inlined nor its result propagated: the caller's code must change. */
            __attribute__((noipa)) int kintsugi_loadavg_shift(void)
            {
            	return 0;
            }

            static int loadavg_proc_show(struct seq_file *m, void *v)
            {
            	unsigned long avnrun[3];

            	get_avenrun(avnrun, FIXED_1/200, kintsugi_loadavg_shift());
            """);
        Edit(tree, directory, "fs/proc/cmdline.c", "seq_putc(m, '\\n');",
            "seq_putc(m, kintsugi_loadavg_shift() ? ' ' : '\\n');");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var builds = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { })
            .Decisions.OfType<FileDecision.Build>().ToList();
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "2", output.Path);
        var progress = new List<string>();

        var trials = await new CatchUpTrials(target, tree, request, difference, output.Path, Record(progress))
            .RunAsync(builds, file => file.PatchSha256!, default);

        Assert.Equal((FileOutcome.Built, "vmlinux:loadavg_proc_show"), Outcome(trials["fs/proc/loadavg.c"]));
        var caller = trials["fs/proc/cmdline.c"];
        Assert.True(caller.Outcome == FileOutcome.Built, $"{caller.Rule}: {caller.Reason}");
        Assert.Equal((FileOutcome.Built, "vmlinux:cmdline_proc_show"), Outcome(caller));
        Assert.Equal(["fs/proc/loadavg.c"], caller.BuiltWith);
        Assert.Equal(["include/linux/proc_fs.h"], caller.Companions);
        Assert.Contains(progress, line => line.StartsWith("fs/proc/cmdline.c: built together with fs/proc/loadavg.c",
            StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_second_run_into_the_same_output_keeps_every_outcome_and_compiles_nothing()
    {
        var (target, tree) = await Kernel61Async("trials boot nothing");
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        await ApplyAsync(tree, directory, "meminfo", "fs/proc/meminfo.c");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var builds = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { })
            .Decisions.OfType<FileDecision.Build>().ToList();
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "2", output.Path);
        await new CatchUpTrials(target, tree, request, difference, output.Path, _ => { }).RunAsync(builds,
            f => f.PatchSha256!, default);
        var progress = new List<string>();

        var again = await new CatchUpTrials(target, tree, request, difference, output.Path, Record(progress))
            .RunAsync(builds, f => f.PatchSha256!, default);

        Assert.Equal(["1 file(s) tried by an earlier run (kept), 0 to try"], progress);
        Assert.Equal(FileOutcome.Built, again["fs/proc/meminfo.c"].Outcome);
    }

    [Fact]
    public async Task The_module_build_takes_a_unit_the_trials_compiled_unless_another_built_file_compiles_into_it()
    {
        var (target, tree) = await Kernel61Async("nothing boots here");
        using var output = new TemporaryDirectory();
        static ChangedFile Changed(string path) => new(path, FileChangeKind.Modified, null, null, 1, 1, [], []);
        void Trial(string key, string objectPath)
        {
            foreach (var file in new[] { objectPath, ExportedSymbolVersions.CommandFile(objectPath) })
            {
                var path = output.File($".catch-up/work/after/{key}/{file}");
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                File.WriteAllText(path, key);
            }
        }
        Trial("meminfo", "fs/proc/meminfo.o");
        Trial("fat-dir", "fs/fat/dir.o");

        // fs/fat/fat.h is compiled into fs/fat/dir.o: the module's build applies it there, the trial did not.
        var (directory, units) = CatchUpTrials.ReusableAfterObjects(output.Path, tree,
            [(Changed("fs/proc/meminfo.c"), "meminfo"), (Changed("fs/fat/dir.c"), "fat-dir"),
                (Changed("fs/fat/fat.h"), "fat-h")]);

        Assert.Equal(1, units);
        Assert.Equal("meminfo", File.ReadAllText(Path.Combine(directory, "fs/proc/meminfo.o")));
        Assert.False(File.Exists(Path.Combine(directory, "fs/fat/dir.o")));
    }

    [Fact]
    public async Task A_fix_that_uses_what_the_update_adds_to_a_header_is_built_with_that_header_as_its_companion()
    {
        var (target, tree) = await Kernel61Async("the symbol table is cached by then");
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        // The update adds a macro to a header included by hundreds of units, and a fix uses it.
        Edit(tree, directory, "include/linux/proc_fs.h", "struct proc_ops {",
            "#define PROC_LINE_END \"\\n\"\n\nstruct proc_ops {");
        Edit(tree, directory, "fs/proc/cmdline.c", "seq_putc(m, '\\n');", "seq_puts(m, PROC_LINE_END);");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var fix = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { })
            .Decisions.OfType<FileDecision.Build>()
            .Where(d => d.File.Path == "fs/proc/cmdline.c").ToList();
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "2", output.Path);

        var trials = await new CatchUpTrials(target, tree, request, difference, output.Path, _ => { })
            .RunAsync(fix, file => file.PatchSha256!, default);

        var built = trials["fs/proc/cmdline.c"];
        Assert.Equal((FileOutcome.Built, "vmlinux:cmdline_proc_show"), Outcome(built));
        Assert.Equal(["include/linux/proc_fs.h"], built.Companions);
    }

    [Fact]
    public async Task A_fix_that_needs_a_member_the_update_adds_to_a_structure_is_refused_naming_the_header()
    {
        var (target, tree) = await Kernel61Async("nothing is resolved");
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        // Its changed lines do not name the structure, so the plan cannot tell; compiling with the header tells.
        Edit(tree, directory, "include/linux/seq_file.h", "\tsize_t pad_until;", "\tsize_t pad_until;\n\tbool quiet;");
        Edit(tree, directory, "fs/proc/cmdline.c", "seq_putc(m, '\\n');", "if (!m->quiet)\n\t\tseq_putc(m, '\\n');");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var fix = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { })
            .Decisions.OfType<FileDecision.Build>()
            .Where(d => d.File.Path == "fs/proc/cmdline.c").ToList();
        Assert.Single(fix);
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "2", output.Path);

        var trials = await new CatchUpTrials(target, tree, request, difference, output.Path, _ => { })
            .RunAsync(fix, file => file.PatchSha256!, default);

        var refused = trials["fs/proc/cmdline.c"];
        Assert.Equal((FileOutcome.Refused, "header-layout"), (refused.Outcome, refused.Rule));
        Assert.Contains("include/linux/seq_file.h (its errors name quiet)", refused.Reason, StringComparison.Ordinal);
        Assert.Contains("include/linux/seq_file.h changes the layout of struct seq_file", refused.Reason,
            StringComparison.Ordinal);
    }

    /// <summary>The suite's 6.1 cloud kernel, prepared; a trial that would boot it fails with the reason it must
    /// not.</summary>
    private static async Task<(BuildTarget Target, KernelSourceTree Tree)> Kernel61Async(string noBoot)
    {
        var target = await DebianBuildTarget.FetchAsync(new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot),
            TestKernels.Debian12Cloud61, () => throw new InvalidOperationException(noBoot), default);
        return (target, await target.PrepareAsync(_ => { }, default));
    }

    private static Action<string> Record(List<string> lines) => line => { lock (lines) lines.Add(line); };

    private static (FileOutcome, string) Outcome(FileTrial trial) =>
        (trial.Outcome, string.Join(", ", trial.Functions));

    /// <summary>The tree's file as the older side, the fixture's fix applied to it as the newer.</summary>
    private static async Task ApplyAsync(KernelSourceTree tree, TemporaryDirectory directory, string fixture,
        string path)
    {
        foreach (var side in new[] { "a", "b" })
        {
            Directory.CreateDirectory(Path.GetDirectoryName(directory.File($"{side}/{path}"))!);
            File.Copy(Path.Combine(tree.Directory, path), directory.File($"{side}/{path}"));
        }
        var patch = Path.Combine(Repository.Root, "tests", "fixtures", "fixes", fixture, "fix.patch");
        var applied = await ExternalCommand.RunAsync("patch",
            ["-p1", "--batch", "-d", directory.File("b"), "-i", patch]);
        Assert.True(applied.Succeeded, applied.StandardOutput);
    }

    private static void Break(KernelSourceTree tree, TemporaryDirectory directory, string path) =>
        Edit(tree, directory, path, "seq_puts(m, saved_command_line);",
            "seq_puts(m, saved_command_line); this fix does not compile;");

    /// <summary>The tree's file as the older side, one text of it replaced as the newer (in the newer side as an
    /// earlier edit left it, with <paramref name="keepEarlierEdit"/>).</summary>
    private static void Edit(KernelSourceTree tree, TemporaryDirectory directory, string path, string text,
        string replacement, bool keepEarlierEdit = false)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(directory.File($"a/{path}"))!);
        Directory.CreateDirectory(Path.GetDirectoryName(directory.File($"b/{path}"))!);
        File.Copy(Path.Combine(tree.Directory, path), directory.File($"a/{path}"), overwrite: keepEarlierEdit);
        var original = File.ReadAllText(keepEarlierEdit ? directory.File($"b/{path}") : Path.Combine(tree.Directory,
            path));
        Assert.Contains(text, original, StringComparison.Ordinal);
        File.WriteAllText(directory.File($"b/{path}"), original.Replace(text, replacement, StringComparison.Ordinal));
    }
}
