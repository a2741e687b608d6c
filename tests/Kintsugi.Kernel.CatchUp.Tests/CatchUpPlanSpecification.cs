using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.CatchUp.Tests;

/// <summary>
/// The plan's decisions on the real Makefiles, headers and .config of a prepared Debian 6.1 cloud kernel tree, for
/// changes written against that tree's own files.
/// </summary>
public sealed class CatchUpPlanSpecification
{
    private static readonly Lazy<Task<KernelSourceTree>> Tree = new(async () =>
    {
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot)
            .FetchAsync(TestKernels.Debian12Cloud61, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        return await KernelSourceTree.PrepareAsync(kernel);
    });

    private static readonly LinuxSourceVersion Older = new("linux-source-6.1", "1");
    private static readonly LinuxSourceVersion Newer = new("linux-source-6.1", "2");

    [Fact]
    public async Task A_changed_header_layout_refuses_a_changed_C_file_only_if_its_changed_lines_name_what_it_changes()
    {
        var plan = await PlanOfAsync(
            // A new member of struct msdos_sb_info: every unit that uses the structure was built with the old layout.
            ("fs/fat/fat.h", "struct msdos_sb_info {\n", "struct msdos_sb_info {\n\tunsigned int added;\n"),
            ("fs/fat/namei_vfat.c", "\tstruct msdos_sb_info *sbi = MSDOS_SB(dir->i_sb);\n",
                "\tstruct msdos_sb_info *sbi = READ_ONCE(MSDOS_SB(dir->i_sb));\n"),
            ("fs/fat/dir.c", "parse_record:\n\tnr_slots = 0;\n", "parse_record:\n\tnr_slots = 0;\n\tbarrier();\n"));

        var header = Decision(plan, "fs/fat/fat.h");
        Assert.Equal(("header-layout", FileOutcome.Refused), (header.Rule, header.Outcome));
        var naming = Decision(plan, "fs/fat/namei_vfat.c");
        Assert.Equal(("header-layout", FileOutcome.Refused), (naming.Rule, naming.Outcome));
        Assert.Contains("struct msdos_sb_info of fs/fat/fat.h", naming.Reason, StringComparison.Ordinal);
        // dir.c includes fat.h too, but its fix does not touch the structure: it is tried against the running kernel's
        // header.
        var other = Assert.IsType<FileDecision.Build>(plan.Decisions.Single(d => d.File.Path == "fs/fat/dir.c"));
        Assert.Equal(["fs/fat/dir.c"], other.Units);
    }

    [Fact]
    public async Task A_changed_header_that_no_C_file_includes_by_name_is_refused_as_unresolved_not_skipped()
    {
        // The build system passes it with -include to every unit; a new inline function in it is code of every unit.
        var plan = await PlanOfAsync(("include/linux/compiler-version.h", "#define __LINUX_COMPILER_VERSION_H\n",
            "#define __LINUX_COMPILER_VERSION_H\nstatic inline int kintsugi_added(int x) { return x; }\n"));

        var decision = Decision(plan, "include/linux/compiler-version.h");
        Assert.Equal((FileOutcome.Refused, "unresolved-unit"), (decision.Outcome, decision.Rule));
    }

    [Fact]
    public async Task A_header_that_only_adds_a_device_id_no_source_names_changes_no_code()
    {
        // As stable updates add USB ids: the id table of ftdi_sio.c uses it once its own fix names it.
        var plan = await PlanOfAsync(("drivers/usb/serial/ftdi_sio_ids.h", "#define FTDI_ELV_UIO88_PID\t0xFB5F",
            "#define FTDI_KINTSUGI_FXA291_PID\t0xE510\n#define FTDI_ELV_UIO88_PID\t0xFB5F"));

        var decision = Decision(plan, "drivers/usb/serial/ftdi_sio_ids.h");
        Assert.Equal(FileOutcome.NoCode, decision.Outcome);
        Assert.Contains("FTDI_KINTSUGI_FXA291_PID", decision.Proof, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_header_that_adds_a_macro_the_running_kernels_sources_already_test_is_refused_naming_one()
    {
        // DEBUG turns on dev_dbg and pr_debug wherever a source tests it: what compiles may change, layouts included.
        var plan = await PlanOfAsync(("drivers/usb/serial/ftdi_sio_ids.h", "#define FTDI_ELV_UIO88_PID\t0xFB5F",
            "#define DEBUG\n#define FTDI_ELV_UIO88_PID\t0xFB5F"));

        var decision = Decision(plan, "drivers/usb/serial/ftdi_sio_ids.h");
        Assert.Equal((FileOutcome.Refused, "header-layout"), (decision.Outcome, decision.Rule));
        Assert.Contains("adds the macro DEBUG, which the running kernel's sources already name (", decision.Reason,
            StringComparison.Ordinal);
    }

    /// <summary>The plan for an update that makes these replacements in the tree's own files.</summary>
    private static async Task<CatchUpPlan> PlanOfAsync(params (string Path, string From, string To)[] changes)
    {
        var tree = await Tree.Value;
        using var directory = new TemporaryDirectory();
        foreach (var (path, from, to) in changes) Change(tree, directory, path, from, to);
        var difference = await SourceDifference.OfExtractedAsync(Older, Newer, directory.Path);
        return CatchUpPlan.Make(difference, tree, maxUnits: 40, only: [], _ => { });
    }

    private static FileDecision.Decided Decision(CatchUpPlan plan, string path) =>
        Assert.IsType<FileDecision.Decided>(plan.Decisions.Single(d => d.File.Path == path));

    /// <summary>Writes the tree's file as the older side and, with <paramref name="from"/> replaced, as the newer
    /// side.</summary>
    private static void Change(KernelSourceTree tree, TemporaryDirectory directory, string path, string from, string to)
    {
        var older = directory.File("a/" + path);
        var newer = directory.File("b/" + path);
        var text = File.Exists(newer) ? File.ReadAllText(newer) : File.ReadAllText(Path.Combine(tree.Directory, path));
        Directory.CreateDirectory(Path.GetDirectoryName(older)!);
        Directory.CreateDirectory(Path.GetDirectoryName(newer)!);
        if (!File.Exists(older)) File.Copy(Path.Combine(tree.Directory, path), older);
        Assert.Contains(from, text, StringComparison.Ordinal);
        var index = text.IndexOf(from, StringComparison.Ordinal);
        File.WriteAllText(newer, text[..index] + to + text[(index + from.Length)..]);
    }
}
