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
        var target = await DebianBuildTarget.FetchAsync(new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot),
            TestKernels.Debian12Cloud61, () => throw new InvalidOperationException("trials boot nothing"), default);
        var tree = await target.PrepareAsync(_ => { }, default);
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        await ApplyAsync(tree, directory, "meminfo", "fs/proc/meminfo.c");                 // vmlinux
        await ApplyAsync(tree, directory, "module-function", "fs/binfmt_misc.c");          // module binfmt_misc
        await ApplyAsync(tree, directory, "cpuinfo", "arch/x86/kernel/cpu/proc.c");       // vmlinux
        Break(tree, directory, "fs/proc/cmdline.c");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var builds = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { }).Decisions.OfType<FileDecision.Build>().ToList();
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
    public async Task A_second_run_into_the_same_output_keeps_every_outcome_and_compiles_nothing()
    {
        var target = await DebianBuildTarget.FetchAsync(new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot),
            TestKernels.Debian12Cloud61, () => throw new InvalidOperationException("trials boot nothing"), default);
        var tree = await target.PrepareAsync(_ => { }, default);
        using var directory = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        await ApplyAsync(tree, directory, "meminfo", "fs/proc/meminfo.c");
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        var builds = CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { }).Decisions.OfType<FileDecision.Build>().ToList();
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "2", output.Path);
        await new CatchUpTrials(target, tree, request, difference, output.Path, _ => { }).RunAsync(builds, f => f.PatchSha256!, default);
        var progress = new List<string>();

        var again = await new CatchUpTrials(target, tree, request, difference, output.Path, Record(progress))
            .RunAsync(builds, f => f.PatchSha256!, default);

        Assert.Equal(["1 file(s) tried by an earlier run (kept), 0 to try"], progress);
        Assert.Equal(FileOutcome.Built, again["fs/proc/meminfo.c"].Outcome);
    }

    private static Action<string> Record(List<string> lines) => line => { lock (lines) lines.Add(line); };

    private static (FileOutcome, string) Outcome(FileTrial trial) => (trial.Outcome, string.Join(", ", trial.Functions));

    /// <summary>The tree's file as the older side, the fixture's fix applied to it as the newer.</summary>
    private static async Task ApplyAsync(KernelSourceTree tree, TemporaryDirectory directory, string fixture, string path)
    {
        foreach (var side in new[] { "a", "b" })
        {
            Directory.CreateDirectory(Path.GetDirectoryName(directory.File($"{side}/{path}"))!);
            File.Copy(Path.Combine(tree.Directory, path), directory.File($"{side}/{path}"));
        }
        var patch = Path.Combine(Repository.Root, "tests", "fixtures", "fixes", fixture, "fix.patch");
        var applied = await ExternalCommand.RunAsync("patch", ["-p1", "--batch", "-d", directory.File("b"), "-i", patch]);
        Assert.True(applied.Succeeded, applied.StandardOutput);
    }

    private static void Break(KernelSourceTree tree, TemporaryDirectory directory, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(directory.File($"a/{path}"))!);
        Directory.CreateDirectory(Path.GetDirectoryName(directory.File($"b/{path}"))!);
        File.Copy(Path.Combine(tree.Directory, path), directory.File($"a/{path}"));
        File.WriteAllText(directory.File($"b/{path}"), File.ReadAllText(Path.Combine(tree.Directory, path))
            .Replace("seq_puts(m, saved_command_line);", "seq_puts(m, saved_command_line); this fix does not compile;",
                StringComparison.Ordinal));
    }
}
