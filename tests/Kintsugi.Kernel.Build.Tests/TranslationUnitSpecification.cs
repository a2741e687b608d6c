using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Units;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// Which units a fix touches and where kbuild links them, read from the real Makefiles and the Debian 6.1
/// cloud configuration of a prepared tree: built in, a module (and which), or not built at all.
/// </summary>
[Collection("6.1 cloud kernel")]
public sealed class TranslationUnitSpecification
{
    private static readonly Lazy<Task<KernelSourceTree>> Tree = new(async () =>
    {
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot)
            .FetchAsync(TestKernels.Debian12Cloud61, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        return await KernelSourceTree.PrepareAsync(kernel);
    });

    private static async Task<KbuildUnits> UnitsAsync() => KbuildUnits.Open((await Tree.Value).Directory);

    [Theory]
    [InlineData("fs/proc/cmdline.c", "vmlinux")]      // proc-y, part of the built-in proc.o
    [InlineData("fs/ext4/inode.c", "vmlinux")]        // ext4-y, CONFIG_EXT4_FS=y
    [InlineData("fs/xfs/xfs_super.c", "xfs")]         // xfs-y, CONFIG_XFS_FS=m
    [InlineData("fs/fat/namei_vfat.c", "vfat")]       // vfat-y, CONFIG_VFAT_FS=m
    [InlineData("drivers/net/dummy.c", "dummy")]      // obj-$(CONFIG_DUMMY) += dummy.o, =m
    [InlineData("net/netfilter/nf_tables_api.c", "nf_tables")] // nf_tables-objs
    [InlineData("lib/string.c", "vmlinux")]           // lib-y
    [InlineData("mm/memory.c", "vmlinux")]            // mmu-$(CONFIG_MMU), spliced into obj-y as $(mmu-y)
    [InlineData("arch/x86/kernel/process_64.c", "vmlinux")] // obj-y += process_$(BITS).o
    // kvm-amd-y += svm/svm.o, listed by the parent directory's Makefile
    [InlineData("arch/x86/kvm/svm/svm.c", "kvm_amd")]
    [InlineData("arch/x86/kvm/vmx/nested.c", "kvm_intel")] // kvm-intel-y += vmx/nested.o
    // kvm-y += $(KVM)/kvm_main.o, from arch/x86/kvm through virt/kvm/Makefile.kvm
    [InlineData("virt/kvm/kvm_main.c", "kvm")]
    [InlineData("net/netfilter/ipvs/ip_vs_proto_udp.c", "ip_vs")] // ip_vs-objs += $(ip_vs_proto-objs-y)
    public async Task A_built_unit_is_located_in_the_object_kbuild_links_it_into(string source, string patchedObject)
    {
        var unit = (await UnitsAsync()).Locate(source);

        Assert.NotNull(unit);
        Assert.Equal(patchedObject, unit.PatchedObject);
        Assert.Equal(source[..^2] + ".o", unit.ObjectPath);
    }

    [Theory]
    [InlineData("sound/core/init.c")]                 // CONFIG_SOUND is not set
    [InlineData("drivers/gpu/drm/drm_drv.c")]         // CONFIG_DRM is not set
    [InlineData("fs/ext4/inode-test.c")]              // CONFIG_EXT4_KUNIT_TESTS is not set
    [InlineData("arch/arm64/kernel/cpuinfo.c")]       // obj-y, but only an arm64 build descends into arch/arm64
    [InlineData("arch/arm/kernel/setup.c")]
    public async Task A_unit_the_configuration_does_not_build_is_not_located(string source)
    {
        Assert.Null((await UnitsAsync()).Locate(source));
    }

    [Fact]
    public async Task Not_built_comes_with_the_unset_option_that_proves_it()
    {
        var resolution = (await UnitsAsync()).Resolve("sound/core/init.c");

        var notBuilt = Assert.IsType<UnitResolution.NotBuilt>(resolution);
        Assert.Contains("CONFIG_SND is not set", notBuilt.Proof.Evidence);
    }

    [Fact]
    public async Task A_C_file_included_into_a_built_unit_resolves_to_that_unit()
    {
        var resolution = (await UnitsAsync()).Resolve("kernel/sched/psi.c");

        var built = Assert.IsType<UnitResolution.Built>(resolution);
        Assert.Equal([new TranslationUnit("kernel/sched/build_utility.c", "kernel/sched/build_utility.o", "vmlinux")],
            built.Units);
    }

    [Fact]
    public async Task A_file_of_another_architecture_is_not_built_for_that_reason()
    {
        var resolution = (await UnitsAsync()).Resolve("arch/arm64/kernel/cpuinfo.c");

        Assert.Equal(NotBuiltReason.OtherArchitecture, Assert.IsType<UnitResolution.NotBuilt>(resolution).Proof.Reason);
    }

    [Fact]
    public async Task A_header_is_found_in_every_C_file_that_includes_it_directly()
    {
        var tree = (await Tree.Value).Directory;
        var expected = Directory.GetFiles(Path.Combine(tree, "fs", "fat"), "*.c")
            .Where(f => File.ReadLines(f).Any(l => l.StartsWith("#include \"fat.h\"", StringComparison.Ordinal)))
            .Select(f => Path.GetRelativePath(tree, f)).Order(StringComparer.Ordinal).ToList();

        var found = HeaderDependents.Scan(tree).SourcesIncluding("fs/fat/fat.h");

        Assert.True(expected.Count >= 5);
        Assert.Equal(expected, found);
    }

    [Fact]
    public async Task A_header_found_through_a_directory_the_makefile_adds_to_the_include_path_counts_its_includers()
    {
        var tree = (await Tree.Value).Directory;
        // core/en/hv_vhca_stats.c says #include "en.h": the file is core/en.h, found through -I of mlx5's Makefile.
        Assert.False(File.Exists(Path.Combine(tree, "drivers/net/ethernet/mellanox/mlx5/core/en/en.h")));

        var found = HeaderDependents.Scan(tree).SourcesIncluding("drivers/net/ethernet/mellanox/mlx5/core/en.h");

        Assert.Contains("drivers/net/ethernet/mellanox/mlx5/core/en/hv_vhca_stats.c", found);
    }

    [Fact]
    public async Task A_C_file_compiled_inside_another_unit_is_found_in_the_unit_that_includes_it()
    {
        var tree = (await Tree.Value).Directory;
        Assert.Null(KbuildUnits.Open(tree).Locate("kernel/sched/psi.c")); // no psi.o: build_utility.c #includes it

        var found = HeaderDependents.Scan(tree).SourcesIncluding("kernel/sched/psi.c");

        Assert.Equal(["kernel/sched/build_utility.c"], found);
        Assert.Equal("vmlinux", KbuildUnits.Open(tree).Locate("kernel/sched/build_utility.c")?.PatchedObject);
    }

    [Fact]
    public async Task A_header_is_found_in_the_C_files_that_include_it_through_another_header()
    {
        var tree = (await Tree.Value).Directory;
        Assert.DoesNotContain(File.ReadLines(Path.Combine(tree, "fs/fat/namei_vfat.c")),
            l => l.Contains("msdos_fs.h", StringComparison.Ordinal));

        var found = HeaderDependents.Scan(tree).SourcesIncluding("include/linux/msdos_fs.h");

        Assert.Contains("fs/fat/namei_vfat.c", found); // through fs/fat/fat.h
    }

    [Fact]
    public async Task A_unit_listed_from_another_directory_is_compiled_by_that_directorys_name_with_its_module_flags()
    {
        var tree = await Tree.Value;
        var unit = Assert.IsType<UnitResolution.Built>((await UnitsAsync()).Resolve("virt/kvm/kvm_main.c"))
            .Units.Single();
        Assert.Equal("arch/x86/kvm/../../../virt/kvm/kvm_main.o", unit.MakeGoal);
        using var output = new TemporaryDirectory();

        await using (var workspace = await BuildWorkspace.OpenAsync(tree))
            await workspace.CompileUnitsAsync([unit], output.Path, extraCFlags: null);

        Assert.True(File.Exists(output.File("virt/kvm/kvm_main.o")));
        // kbuild's record of the command: compiled as part of module kvm, as arch/x86/kvm/Makefile compiles it.
        var command = await File.ReadAllTextAsync(output.File("virt/kvm/.kvm_main.o.cmd"));
        Assert.Contains("-DMODULE", command);
        Assert.Contains("KBUILD_MODNAME=", command);
        Assert.Contains("kvm", command[command.IndexOf("KBUILD_MODNAME=", StringComparison.Ordinal)..][..40]);
    }

    [Fact]
    public async Task A_header_is_compiled_into_every_built_unit_whose_C_file_includes_it()
    {
        var header = (await UnitsAsync()).ResolveHeader("fs/fat/fat.h");

        var built = Assert.IsType<UnitResolution.Built>(header.Resolution);
        Assert.Contains(built.Units, u => u.SourcePath == "fs/fat/namei_vfat.c" && u.PatchedObject == "vfat");
        Assert.Contains(built.Units, u => u.SourcePath == "fs/fat/inode.c" && u.PatchedObject == "fat");
        Assert.False(header.Partial);
    }

    [Fact]
    public async Task A_header_only_other_architectures_include_is_not_built_with_the_proof_for_each_includer()
    {
        // Included by arch/mips/pci/pci-xtalk-bridge.c and two more MIPS files, nothing else.
        var header = (await UnitsAsync()).ResolveHeader("include/linux/platform_data/xtalk-bridge.h");

        var notBuilt = Assert.IsType<UnitResolution.NotBuilt>(header.Resolution);
        Assert.Equal(NotBuiltReason.IncludersNotBuilt, notBuilt.Proof.Reason);
        Assert.Contains(notBuilt.Proof.Evidence,
            e => e.StartsWith("arch/mips/pci/pci-xtalk-bridge.c", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_header_given_to_the_compiler_on_its_command_line_is_never_called_not_built()
    {
        // Every unit is compiled with -include include/linux/compiler-version.h, and no C file names it.
        var header = (await UnitsAsync()).ResolveHeader("include/linux/compiler-version.h");

        var unresolved = Assert.IsType<UnitResolution.Unresolved>(header.Resolution);
        Assert.Contains("no C file of the tree #includes it by name", unresolved.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_units_of_a_common_header_are_resolved_only_up_to_the_limit_the_caller_gives()
    {
        var header = (await UnitsAsync()).ResolveHeader("include/linux/list.h", limit: 5);

        Assert.True(header.Partial);
        Assert.InRange(header.Units.Count, 6, 1000);
        Assert.True(header.Includers > 1000);
    }

    [Fact]
    public async Task Many_units_compile_in_one_make_that_keeps_going_and_each_failed_unit_carries_its_own_errors()
    {
        var tree = await Tree.Value;
        var units = await UnitsAsync();
        var broken = units.Locate("fs/fat/namei_vfat.c")!;
        var alsoBroken = units.Locate("fs/fat/dir.c")!;
        var dummy = units.Locate("drivers/net/dummy.c")!;
        static SourcePatch Breaking(string path, string error) => SourcePatch.Parse(Path.GetFileName(path) + ".patch",
            $"--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-// SPDX-License-Identifier: GPL-2.0-only\n+#error {error}\n");
        using var output = new TemporaryDirectory();

        IReadOnlyList<UnitCompileFailure> failed;
        await using (var workspace = await BuildWorkspace.OpenAsync(tree))
        {
            await workspace.ApplyAsync(Breaking("fs/fat/namei_vfat.c", "vfat does not compile"));
            await workspace.ApplyAsync(Breaking("fs/fat/dir.c", "dir does not compile"));
            failed = await workspace.CompileUnitsKeepGoingAsync([broken, dummy, alsoBroken], output.Path,
                extraCFlags: null);
        }

        Assert.Equal([broken, alsoBroken], failed.Select(f => f.Unit));
        var vfat = failed.Single(f => f.Unit == broken).Errors!;
        Assert.Contains("fs/fat/namei_vfat.c:1:2: error: #error vfat does not compile", vfat);
        Assert.DoesNotContain("dir does not compile", vfat);
        var dir = failed.Single(f => f.Unit == alsoBroken).Errors!;
        Assert.Contains("fs/fat/dir.c:1:2: error: #error dir does not compile", dir);
        Assert.DoesNotContain("vfat does not compile", dir);
        Assert.True(File.Exists(output.File("drivers/net/dummy.o")));
        Assert.True(File.Exists(output.File("drivers/net/.dummy.o.cmd")));
        Assert.False(File.Exists(output.File("fs/fat/namei_vfat.o")));
    }
}
