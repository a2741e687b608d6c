using Kintsugi.Kernel.Archive;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Tests;

/// <summary>The archive provider knows every Debian release that still gets kernel fixes, through private apt
/// state.</summary>
public sealed class ReleaseArchiveSpecification
{
    private static readonly DebianKernelArchive Archive = new(DebianKernelArchive.DefaultCacheRoot);

    [Theory]
    [InlineData("5.10.0-46-cloud-amd64", "bullseye")]
    [InlineData("6.1.0-0.deb11.52-cloud-amd64", "bullseye")]
    [InlineData("6.1.0-56-cloud-amd64", "bookworm")]
    [InlineData("6.12.117+deb12-cloud-amd64", "bookworm")]
    [InlineData("6.12.117+deb13-cloud-amd64", "trixie")]
    [InlineData("6.12.115+deb13.1-cloud-amd64", "trixie")]
    public void A_kernels_abi_name_says_which_release_ships_it(string kernel, string codename) =>
        Assert.Equal(codename, DebianRelease.Of(KernelRelease.Parse(kernel))?.Codename);

    [Fact]
    public void A_name_outside_debians_rules_names_no_release_and_is_looked_up_everywhere() =>
        Assert.Null(DebianRelease.Of(KernelRelease.Parse("6.8.0-45-generic")));

    [Theory]
    [InlineData("11", 11)]
    [InlineData("bookworm", 12)]
    [InlineData("Debian13", 13)]
    public void A_release_is_named_by_number_or_codename(string text, int number) =>
        Assert.Equal(number, DebianRelease.Parse(text).Number);

    [Fact]
    public void An_unknown_release_is_a_usage_error_listing_the_known_ones()
    {
        var error = Assert.Throws<KernelArchiveException>(() => DebianRelease.Parse("buster"));
        Assert.Equal(ExitCode.Usage, error.ExitCode);
        Assert.Contains("11 (bullseye), 12 (bookworm), 13 (trixie)", error.Message);
    }

    [Theory]
    [InlineData("6.12.117-1~deb12u1", "6.12.117-1")]
    [InlineData("5.10.259-1", "5.10.262-1")]
    [InlineData("6.1.158-1", "6.1.192-2")]
    [InlineData("6.12.9-1", "6.12.10-1")]
    [InlineData("2.0-1", "1:1.0-1")]
    public void Package_versions_order_as_dpkg_orders_them(string older, string newer)
    {
        Assert.True(DebianVersionComparer.Instance.Compare(older, newer) < 0);
        Assert.True(DebianVersionComparer.Instance.Compare(newer, older) > 0);
    }

    [Fact]
    public async Task Every_release_offers_cloud_kernels_with_headers_and_source_from_its_own_suites()
    {
        var kernels = await new KernelCatalog(Archive).ListAsync(DebianRelease.All, "cloud-amd64", refresh: false);
        foreach (var release in DebianRelease.All)
        {
            var offered = kernels.Where(k => k.Codename == release.Codename).ToList();
            Assert.Contains(offered, k => k.Buildable);
            Assert.All(offered, k => Assert.Contains(k.Suite, release.Suites));
            Assert.All(offered, k => Assert.Equal(release, DebianRelease.Of(k.Release)));
        }
        Assert.Contains(kernels, k =>
            k.Release == TestKernels.Debian11Cloud510 && k.Buildable && k.Codename == "bullseye");
        Assert.Contains(kernels, k =>
            k.Release == TestKernels.Debian13Cloud612 && k.Buildable && k.Codename == "trixie");
        Assert.Contains(kernels, k =>
            k.Release == TestKernels.Debian12Cloud61 && k.Buildable && k.Codename == "bookworm");
        // Debian 11 also carries the 6.1 backport; it is listed as Debian 11's.
        Assert.Contains(kernels, k =>
            k.Codename == "bullseye" && k.Release.Value.StartsWith("6.1.0-0.deb11.", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_releases_lists_live_in_the_cache_and_the_hosts_apt_does_not_see_them()
    {
        var trixie = Archive.AptFor(DebianRelease.Trixie);
        await trixie.EnsureListsAsync(ReleaseApt.MaxListAge, _ => { }, CancellationToken.None);
        Assert.NotNull(trixie.LastUpdated);
        Assert.Contains($"linux-image-{TestKernels.Debian13Cloud612}",
            await trixie.SearchNamesAsync("^linux-image-.*deb13-cloud-amd64$", CancellationToken.None));
        var host = await ExternalCommand.RunAsync("apt-cache",
            ["search", "--names-only", "^linux-image-.*deb13-cloud-amd64$"]);
        Assert.True(host.Succeeded, host.StandardError);
        Assert.Equal("", host.StandardOutput.Trim());
        Assert.DoesNotContain(Directory.GetFiles("/var/lib/apt/lists"), f =>
            f.Contains("trixie", StringComparison.Ordinal) || f.Contains("bullseye", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("5.10.0-46-cloud-amd64", "bullseye", "5.10.")]
    [InlineData("6.12.117+deb13-cloud-amd64", "trixie", "6.12.117-")]
    public async Task A_kernel_of_another_release_is_fetched_from_that_releases_archive(string release, string codename,
        string version)
    {
        var kernel = await Archive.FetchAsync(KernelRelease.Parse(release), KernelParts.Image);
        Assert.Equal(codename, kernel.Distribution);
        Assert.StartsWith(version, kernel.Target.PackageVersion);
        Assert.True(File.Exists(kernel.Vmlinuz));
        Assert.NotEqual(default, kernel.Target.BuildId);
    }

    [Fact]
    public async Task
        A_debian_13_kernels_headers_come_without_the_compiler_they_depend_on_which_runs_from_its_build_root()
    {
        var kernel = await Archive.FetchAsync(TestKernels.Debian13Cloud612, KernelParts.Image | KernelParts.Headers);
        Assert.Contains(kernel.Packages, p => p.StartsWith("linux-kbuild-6.12.117+deb13=", StringComparison.Ordinal));
        Assert.DoesNotContain(kernel.Packages, p => p.StartsWith("gcc-", StringComparison.Ordinal));
        // Merged /usr: the package ships usr/lib/modules; lib/ is the link a merged system has.
        Assert.True(Directory.Exists(kernel.ModulesDirectory));
        Assert.Equal("usr/lib", new FileInfo(Path.Combine(kernel.Root, "lib")).LinkTarget);
    }
}
