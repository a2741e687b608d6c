using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Toolchains;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// Kernels of the neighbouring Debian releases, compiled by their own compilers: Debian 11's 5.10 (gcc-10,
/// no IBT) and Debian 13's 6.12 (gcc-14, IBT) are prepared and built in build roots of their releases, proven
/// against the shipped code, and loaded and unloaded in the lab.
/// </summary>
/// <param name="exceptionHandlerField">
/// Whether the line's <c>__ex_table</c> entries name their handler function (5.10: instruction, fixup, handler, each
/// relative) rather than a handler type and register (6.x: the third field is data, with no relocation).
/// </param>
public abstract class ReleaseLineSpecification(KernelRelease release, string codename, string compiler,
    bool exceptionHandlerField)
{
    private static DebianKernelArchive Archive => new(DebianKernelArchive.DefaultCacheRoot);

    private async Task<FetchedKernel> KernelAsync() =>
        await Archive.FetchAsync(release, KernelParts.Image | KernelParts.Headers | KernelParts.Source);

    [LineFact]
    public async Task The_tree_is_prepared_in_a_build_root_of_its_own_release_with_the_compiler_its_config_names()
    {
        var kernel = await KernelAsync();
        var tree = await KernelSourceTree.PrepareAsync(kernel);

        var root = Assert.IsType<BuildRootToolchain>(tree.Toolchain);
        Assert.Contains($"{codename}-{compiler}", root.Root, StringComparison.Ordinal);
        var needed = CompilerRequirement.FromConfig(kernel.Config);
        Assert.Equal(needed.VersionText,
            await ToolchainSelection.VersionTextAsync(root, needed.Command, CancellationToken.None));
        Assert.NotEqual(needed.VersionText,
            await ToolchainSelection.VersionTextAsync(Toolchain.Host, needed.Command, CancellationToken.None));
        // The configuration kbuild evaluated against the build root's tools is the distribution's, line for line.
        Assert.Equal(ConfigLines(Path.Combine(kernel.HeadersDirectory, ".config")),
            ConfigLines(Path.Combine(tree.Directory, ".config")));
    }

    [LineFact]
    public async Task Out_of_tree_modules_are_built_with_the_kernels_own_compiler_in_its_build_root()
    {
        var kernel = await KernelAsync();
        using var directory = new TemporaryDirectory();

        var built = await ExternalModuleBuild.BuildAsync(kernel, Repository.FixtureModules,
            Path.Combine(directory.Path, "modules"));

        var module =
            ModuleFile.Read(built.Single(p => p.EndsWith("kintsugi_fixture_cmdline_a.ko", StringComparison.Ordinal)));
        Assert.Equal(release.Value, module.VermagicRelease);
    }

    [LineFact]
    public async Task A_one_function_fix_is_built_proven_against_the_shipped_code_and_loads_and_unloads_in_the_lab()
    {
        var fix = CorpusFix.Named("changed-function");
        using var directory = new TemporaryDirectory();
        var archive = Archive;
        var lab = new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { });
        var builder = new KernelPatchBuilder(archive, () => lab, _ => { });

        var result = await builder.BuildAsync(
            new KernelBuildRequest(new TargetReference.Debian(release), [fix.PatchFor(release)], fix.Name, [], null,
            Path.Combine(directory.Path, "out")));

        Assert.Equal(BuildOutcome.Built, result.Outcome);
        Assert.True(result.Manifest!.Fidelity.Checked);
        Assert.True(result.Manifest.Fidelity.FunctionsMatched > 0);
        Assert.Empty(result.Manifest.Fidelity.Mismatches);
        Assert.Equal(release.Value, ModuleFile.Read(result.Module!).VermagicRelease);
        var verdict = await new PatchVerification(lab).RunAsync(release, result.Module!, fix.Check,
            TimeSpan.FromMinutes(8));
        Assert.True(verdict.Verdict == "pass", string.Join('\n', verdict.Steps.Select(s => $"{s.Name}: {s.ExitCode}")
            .Concat(verdict.LogProblems).Concat(verdict.TaintProblems)));
    }

    /// <summary>
    /// tests/fixtures/exception-table: a fix to filldir64, whose unsafe_put_user calls each have an exception table
    /// entry. Its check lists a directory (the fix hides one name) and then asks getdents64 to write into a page
    /// the kernel cannot write: only the livepatch's own entries turn that fault into EFAULT instead of an oops.
    /// </summary>
    [LineFact]
    public async Task A_fault_in_patched_user_access_code_is_fixed_up_by_the_livepatchs_own_exception_table()
    {
        var fixture = Path.Combine(Repository.Root, "tests", "fixtures", "exception-table");
        var line = string.Join('.', release.Value.Split('.', '-', '+').Take(2));
        using var directory = new TemporaryDirectory();
        var archive = Archive;
        var lab = new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { });
        var builder = new KernelPatchBuilder(archive, () => lab, _ => { });

        var result = await builder.BuildAsync(
            new KernelBuildRequest(new TargetReference.Debian(release), [Path.Combine(fixture, $"fix-{line}.patch")],
            "exception-table", [], null, Path.Combine(directory.Path, "out")));

        Assert.Equal(BuildOutcome.Built, result.Outcome);
        Assert.Empty(result.Manifest!.Fidelity.Mismatches);
        var module = Kintsugi.Elf.ElfObject.Load(result.Module!);
        var table = module.FindSection("__ex_table");
        Assert.NotNull(table);
        var relocations = module.GetRelocationSections(table).SelectMany(r => r.Relocations).ToList();
        var entries = (int)(table.Size / 12);
        Assert.True(entries >= 4, $"{entries} exception table entries for filldir64's unsafe_put_user calls");
        Assert.Equal(entries * (exceptionHandlerField ? 3 : 2), relocations.Count);
        var handlers = relocations.Where(r => r.Offset % 12 == 8).Select(r => r.Symbol?.Name).ToList();
        Assert.All(handlers, h => Assert.StartsWith("ex_handler_", h));
        Assert.Equal(exceptionHandlerField, handlers.Count > 0);

        var helper = Path.Combine(directory.Path, "getdents_fault");
        var compiled = await ExternalCommand.RunAsync("gcc",
            ["-static", "-O2", "-o", helper, Path.Combine(fixture, "getdents_fault.c")]);
        Assert.True(compiled.Succeeded, compiled.StandardError);
        var verdict = await new PatchVerification(lab).RunAsync(release, result.Module!,
            Path.Combine(fixture, "check.sh"), TimeSpan.FromMinutes(8),
            [new GuestFile(helper, "/fixtures/getdents_fault")]);
        Assert.True(verdict.Verdict == "pass", string.Join('\n', verdict.Steps.Select(s => $"{s.Name}: {s.ExitCode}")
            .Concat(verdict.LogProblems).Concat(verdict.TaintProblems)));
    }

    private static List<string> ConfigLines(string path) => [.. File.ReadAllLines(path)
        .Where(l => l.StartsWith("CONFIG_", StringComparison.Ordinal)).Order(StringComparer.Ordinal)];
}

[Collection("5.10 cloud kernel"), BuildRootLine]
public sealed class Debian11Line()
    : ReleaseLineSpecification(TestKernels.Debian11Cloud510, "bullseye", "gcc-10", exceptionHandlerField: true);

[Collection("Debian 13 6.12 cloud kernel"), BuildRootLine]
public sealed class Debian13Line()
    : ReleaseLineSpecification(TestKernels.Debian13Cloud612, "trixie", "gcc-14", exceptionHandlerField: false);

/// <summary>The one rule for a compiler: the text the kernel's .config records, exactly.</summary>
public sealed class CompilerRequirementSpecification
{
    [Theory]
    [InlineData("gcc-10 (Debian 10.2.1-6) 10.2.1 20210110", "gcc-10", "gcc-10")]
    [InlineData("x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0", "x86_64-linux-gnu-gcc-14", "gcc-14")]
    [InlineData("gcc-12 (Debian 12.2.0-14) 12.2.0", "gcc-12", "gcc-12")]
    [InlineData("gcc (Debian 12.2.0-14) 12.2.0", "gcc", "gcc-12")]
    [InlineData("x86_64-linux-gnu-gcc-13 (Ubuntu 13.2.0-23ubuntu4) 13.2.0", "x86_64-linux-gnu-gcc-13", "gcc-13")]
    [InlineData("gcc (GCC) 11.4.1 20231218 (Red Hat 11.4.1-3)", "gcc", null)]
    public void The_configs_version_text_names_the_command_and_the_debian_package(string text, string command,
        string? package)
    {
        var needed = CompilerRequirement.Parse(text);
        Assert.Equal(command, needed.Command);
        Assert.Equal(package, needed.DebianPackage);
    }

    [Fact]
    public async Task A_kernel_config_without_a_compiler_record_is_refused()
    {
        using var directory = new TemporaryDirectory();
        var config = Path.Combine(directory.Path, ".config");
        await File.WriteAllTextAsync(config, "CONFIG_LIVEPATCH=y\n");
        var error = Assert.Throws<ToolchainException>(() => CompilerRequirement.FromConfig(config));
        Assert.Contains("CONFIG_CC_VERSION_TEXT", error.Message);
    }

    [Fact]
    public async Task A_directory_target_built_by_a_compiler_this_machine_lacks_is_refused_before_anything_is_built()
    {
        // A real kernel configuration of another compiler: Debian 11's, built with gcc-10, which this Debian 12 host
        // does not have.
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot).FetchAsync(
            TestKernels.Debian11Cloud510, KernelParts.Image);
        using var directory = new TemporaryDirectory();
        var source = Path.Combine(directory.Path, "source");
        Directory.CreateDirectory(Path.Combine(source, "include", "config"));
        File.Copy(kernel.Config, Path.Combine(source, ".config"));
        await File.WriteAllTextAsync(Path.Combine(source, "include", "config", "kernel.release"),
            kernel.Target.Release.Value + "\n");
        await File.WriteAllTextAsync(Path.Combine(source, "Module.symvers"), "");
        await File.WriteAllLinesAsync(Path.Combine(directory.Path, "System.map"),
            Enumerable.Range(0, 2000).Select(i => $"ffffffff{i:x8} T f{i}"));

        var refused = await Assert.ThrowsAsync<ToolchainException>(() =>
            DirectoryBuildTarget.OpenAsync(directory.Path, CancellationToken.None));

        Assert.Equal(ExitCode.InputRefused, refused.ExitCode);
        Assert.Contains("gcc-10 (Debian 10.2.1-6) 10.2.1 20210110", refused.Message, StringComparison.Ordinal);
        Assert.Contains("not installed", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_directory_target_of_the_hosts_own_compiler_is_built_on_the_host()
    {
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot).FetchAsync(
            TestKernels.Debian12Cloud61, KernelParts.Image);
        using var directory = new TemporaryDirectory();
        File.Copy(kernel.Config, Path.Combine(directory.Path, ".config"));
        Assert.Same(Toolchain.Host, await ToolchainSelection.ForDirectoryAsync(directory.Path, CancellationToken.None));
    }
}
