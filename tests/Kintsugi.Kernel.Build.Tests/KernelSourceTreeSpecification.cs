using Kintsugi.Elf;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// A prepared distribution source tree compiles one translation unit to the machine code the distribution
/// shipped, and a build's workspace never changes the shared tree. The oracle needs no debug package: the
/// kallsyms tables inside the image list every symbol (as the booted kernel's /proc/kallsyms does), and the
/// vmlinux inside the image holds the shipped bytes at those addresses.
/// </summary>
public abstract class KernelSourceTreeSpecification(KernelRelease release)
{
    private async Task<(KernelSourceTree Tree, ShippedVmlinux Shipped)> KernelAsync()
    {
        var cache = DebianKernelArchive.DefaultCacheRoot;
        var archive = new DebianKernelArchive(cache);
        var kernel = await archive.FetchAsync(release, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        var tree = await KernelSourceTree.PrepareAsync(kernel);
        var image = VmlinuxImage.Parse(await KernelImage.ReadVmlinuxAsync(kernel.Vmlinuz));
        var lab = await KernelUnderTest.GetAsync(release);
        var symbols = await KallsymsCapture.LoadAsync(() => lab.Lab, release, archive.KernelDirectory(release), image,
            _ => { });
        return (tree, new ShippedVmlinux(symbols, image));
    }

    /// <summary>fs/proc/cmdline.c compiled in a workspace of the prepared tree, with these flags added.</summary>
    private async Task<(ShippedVmlinux Shipped, ElfObject Unit)> CmdlineCompiledWithAsync(string? extraCFlags)
    {
        var (tree, shipped) = await KernelAsync();
        using var output = new TemporaryDirectory();
        await using (var workspace = await BuildWorkspace.OpenAsync(tree))
            await workspace.CompileAsync("fs/proc/cmdline.o", output.File("cmdline.o"), extraCFlags);
        return (shipped, ElfObject.Load(output.File("cmdline.o")));
    }

    [Fact]
    public async Task A_unit_compiled_with_the_distribution_flags_reproduces_the_shipped_function()
    {
        var (shipped, unit) = await CmdlineCompiledWithAsync(extraCFlags: null);

        var resolved = new SymbolResolver(shipped, unit).ResolveFunction("cmdline_proc_show", out var mismatch);

        Assert.True(resolved is not null, mismatch);
        Assert.Equal(Sympos.Unique, resolved.Sympos);
        Assert.Equal(ResolutionMethod.UniqueName, resolved.Method);
        Assert.Equal(shipped.Symbols.Named("cmdline_proc_show").Single().Address, resolved.Address);
    }

    [Fact]
    public async Task A_unit_compiled_differently_fails_the_fidelity_proof_naming_the_function()
    {
        var (shipped, unit) = await CmdlineCompiledWithAsync("-O1 -fno-inline");

        var resolved = new SymbolResolver(shipped, unit).ResolveFunction("cmdline_proc_show", out var mismatch);

        Assert.Null(resolved);
        Assert.Contains("cmdline_proc_show: the compiled original differs from the shipped code of vmlinux", mismatch);
    }

    [Fact]
    public async Task A_unit_compiled_with_one_section_per_function_proves_the_shipped_function_without_the_original()
    {
        var (shipped, unit) = await CmdlineCompiledWithAsync("-ffunction-sections -fdata-sections");

        var resolved = new SymbolResolver(shipped, unit, UnitCompile.SectionPerFunction)
            .ResolveFunction("cmdline_proc_show", out var mismatch);

        Assert.True(resolved is not null, mismatch);
        Assert.Equal(shipped.Symbols.Named("cmdline_proc_show").Single().Address, resolved.Address);
    }

    [Fact]
    public async Task A_unit_with_one_section_per_function_that_differs_asks_for_the_original_instead_of_failing()
    {
        var (shipped, unit) = await CmdlineCompiledWithAsync("-ffunction-sections -fdata-sections -O1 -fno-inline");
        var resolver = new SymbolResolver(shipped, unit, UnitCompile.SectionPerFunction);

        var needed = Assert.Throws<OriginalCompileNeededException>(() =>
            resolver.ResolveFunction("cmdline_proc_show", out _));

        Assert.Contains("cmdline_proc_show compiled with one section per function differs", needed.Message);
    }

    [Fact]
    public async Task A_workspace_patches_and_compiles_without_changing_the_shared_tree()
    {
        var (tree, _) = await KernelAsync();
        var source = Path.Combine(tree.Directory, "fs/proc/cmdline.c");
        var before = await File.ReadAllTextAsync(source);
        var patch = SourcePatch.Parse("marker.patch", """
            --- a/fs/proc/cmdline.c
            +++ b/fs/proc/cmdline.c
            @@ -1,3 +1,4 @@
            +/* kintsugi workspace marker */
             // SPDX-License-Identifier: GPL-2.0
             #include <linux/fs.h>
             #include <linux/init.h>

            """);
        string changes;
        using var output = new TemporaryDirectory();
        await using (var workspace = await BuildWorkspace.OpenAsync(tree))
        {
            changes = workspace.ChangesDirectory;
            await workspace.ApplyAsync(patch);
            await workspace.CompileAsync("fs/proc/cmdline.o", output.File("cmdline.o"),
                "-ffunction-sections -fdata-sections");
            Assert.StartsWith("/* kintsugi workspace marker */", await workspace.ReadAllTextAsync("fs/proc/cmdline.c"));
        }

        Assert.Equal(before, await File.ReadAllTextAsync(source));
        Assert.NotNull(ElfObject.Load(output.File("cmdline.o")).FindSection(".text.cmdline_proc_show"));
        Assert.False(Directory.Exists(changes));
    }

    [Fact]
    public async Task A_compiler_killed_by_a_signal_stops_the_build_as_interrupted_instead_of_refusing_the_source()
    {
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot)
            .FetchAsync(release, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        var tree = await KernelSourceTree.PrepareAsync(kernel);
        var unit = Units.KbuildUnits.Open(tree).Locate("fs/proc/cmdline.c")!;
        using var scratch = new TemporaryDirectory();
        // gcc runs its compiler proper under this wrapper, which dies of SIGKILL as under the out-of-memory killer.
        var killer = scratch.File("killed-compiler.sh");
        await File.WriteAllTextAsync(killer, "#!/bin/sh\nkill -KILL $$\n");
        File.SetUnixFileMode(killer, UnixFileMode.UserRead | UnixFileMode.UserExecute);

        BuildInterruptedException interrupted;
        await using (var workspace = await BuildWorkspace.OpenAsync(tree))
            interrupted = await Assert.ThrowsAsync<BuildInterruptedException>(() =>
                workspace.CompileUnitsKeepGoingAsync([unit], scratch.File("objects"), $"-wrapper {killer}"));

        Assert.Equal(ExitCode.Environment, interrupted.ExitCode);
        Assert.Contains("the compiler was stopped by a signal (Killed", interrupted.Message);
        Assert.Contains("run the same command again", interrupted.Message);
    }
}

[Collection("6.1 cloud kernel")]
public sealed class KernelSourceTreeOn61CloudKernel() : KernelSourceTreeSpecification(TestKernels.Debian12Cloud61);

[Collection("6.12 cloud kernel")]
public sealed class KernelSourceTreeOn612CloudKernel() : KernelSourceTreeSpecification(TestKernels.Debian12Cloud612)
{
    /// <summary>
    /// Debian built 6.12 without Rust (CONFIG_RUSTC_VERSION=0); kbuild's configuration asks the rustc it finds for its
    /// version, so a developer's own rustc (rustup's ~/.cargo/bin, as on this machine) would change the .config and
    /// the preparation would be refused.
    /// </summary>
    [Fact]
    public async Task Build_commands_see_no_rustc_the_distributions_build_did_not_have()
    {
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot)
            .FetchAsync(TestKernels.Debian12Cloud612, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        var tree = await KernelSourceTree.PrepareAsync(kernel);

        var probe = await tree.Toolchain.RunAsync("sh", ["scripts/rustc-version.sh", "rustc"], tree.Directory,
            [tree.Directory]);

        Assert.Contains("CONFIG_RUSTC_VERSION=0",
            await File.ReadAllLinesAsync(Path.Combine(kernel.HeadersDirectory, ".config")));
        Assert.Equal("0", probe.StandardOutput.Trim());
    }
}

/// <summary>kintsugi kernel prepare, through the real command line.</summary>
[Collection("6.1 cloud kernel")]
public sealed class KernelPrepareCommandSpecification
{
    [Fact]
    public async Task Prepare_reports_a_tree_configured_exactly_as_the_distribution_built_it()
    {
        var result = await ExternalCommand.RunAsync(Repository.KintsugiBinary,
            ["kernel", "prepare", TestKernels.Debian12Cloud61.Value, "--json"]);
        Assert.True(result.Succeeded, result.StandardError);
        using var json = System.Text.Json.JsonDocument.Parse(result.StandardOutput);
        var directory = json.RootElement.GetProperty("directory").GetString()!;
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot).FetchAsync(
            TestKernels.Debian12Cloud61, KernelParts.Image | KernelParts.Headers);
        Assert.Equal(kernel.Target.BuildId.ToString(), json.RootElement.GetProperty("buildId").GetString());
        Assert.Equal(await File.ReadAllTextAsync(Path.Combine(kernel.HeadersDirectory, ".config")),
            await File.ReadAllTextAsync(Path.Combine(directory, ".config")));
        // What modules built from this tree record as their vermagic release.
        Assert.Contains($"#define UTS_RELEASE \"{TestKernels.Debian12Cloud61}\"",
            await File.ReadAllTextAsync(Path.Combine(directory, "include", "generated", "utsrelease.h")));
    }
}
