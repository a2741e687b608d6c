using Kintsugi.Kernel.Archive;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Tests;

/// <summary>Fetching distribution kernels, and reading modules built against them (on the host).</summary>
public sealed class ArchiveAndModuleSpecification
{
    [Fact]
    public async Task A_fixture_livepatch_declares_its_name_kernel_and_livepatch_marker()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud612);
        var module = ModuleFile.Read(kernel.Modules["kintsugi_fixture_cmdline_b"]);
        Assert.Equal("kintsugi_fixture_cmdline_b", module.Name.Value);
        Assert.True(module.IsLivepatch);
        Assert.Equal(TestKernels.Debian12Cloud612.Value, module.VermagicRelease);
        Assert.NotNull(module.BuildId);
        Assert.Equal("99.0.0-kintsugi-fixture", module[LoadedRecord.EffectiveVersionKey]);
    }

    [Fact]
    public async Task A_truncated_module_is_refused_with_the_one_module_error()
    {
        var kernel = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        var bytes = await File.ReadAllBytesAsync(kernel.Modules["kintsugi_fixture_cmdline_a"]);
        using var directory = new TemporaryDirectory();
        var path = directory["truncated.ko"];
        foreach (var length in new[] { 3, 16, 63, 64, 1000, bytes.Length / 2, bytes.Length - 1 })
        {
            await File.WriteAllBytesAsync(path, bytes[..length]);
            Assert.Throws<ModuleFileException>(() => ModuleFile.Read(path));
        }
    }

    [Fact]
    public async Task The_two_kernel_lines_are_distinct_builds_with_their_own_package_versions()
    {
        var old = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        var backport = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud612);
        Assert.StartsWith("6.1.", old.Kernel.Target.PackageVersion);
        Assert.StartsWith("6.12.117-", backport.Kernel.Target.PackageVersion);
        Assert.NotEqual(old.Kernel.Target.BuildId, backport.Kernel.Target.BuildId);
        Assert.True(File.Exists(Path.Combine(backport.Kernel.HeadersDirectory, "Module.symvers")));
    }

    [Fact]
    public async Task An_older_abi_whose_kbuild_left_the_archive_is_fetched_with_a_warning_and_builds_modules()
    {
        var cache = DebianKernelArchive.DefaultCacheRoot;
        var kernel = await new DebianKernelArchive(cache)
            .FetchAsync(TestKernels.Debian12Cloud61Older, KernelParts.Image | KernelParts.Headers);
        Assert.Equal(TestKernels.Debian12Cloud61Older, kernel.Target.Release);
        Assert.StartsWith("6.1.", kernel.Target.PackageVersion);
        var newest = await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        Assert.NotEqual(newest.Kernel.Target.BuildId, kernel.Target.BuildId);
        Assert.Contains(kernel.Warnings, w => w.Contains("linux-kbuild-6.1", StringComparison.Ordinal));

        using var output = new TemporaryDirectory();
        var built = await Kintsugi.Kernel.Build.ExternalModuleBuild.BuildAsync(kernel, Repository.FixtureModules,
            output["modules"]);
        var module = ModuleFile.Read(
            built.Single(p => p.EndsWith("kintsugi_fixture_cmdline_a.ko", StringComparison.Ordinal)));
        Assert.Equal(TestKernels.Debian12Cloud61Older.Value, module.VermagicRelease);
    }

    [Fact]
    public async Task A_release_missing_from_the_archive_is_refused_with_a_way_to_list_the_real_ones()
    {
        var error = await Assert.ThrowsAsync<KernelArchiveException>(() =>
            new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot)
            .FetchAsync(KernelRelease.Parse("6.1.0-9999-cloud-amd64"), KernelParts.Image));
        Assert.Equal(ExitCode.NotFound, error.ExitCode);
        Assert.Contains("kintsugi kernel list-available", error.Message);
        Assert.Contains("Debian 11 (bullseye), Debian 12 (bookworm), Debian 13 (trixie)", error.Message);
    }
}
