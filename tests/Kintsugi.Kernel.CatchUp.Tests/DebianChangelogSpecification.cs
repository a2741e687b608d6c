namespace Kintsugi.Kernel.CatchUp.Tests;

/// <summary>Debian's changelog of linux 6.1.187-1, as shipped in linux-source-6.1.</summary>
public sealed class DebianChangelogSpecification
{
    [Fact]
    public async Task The_versions_between_two_versions_are_those_after_the_older_up_to_the_newer_newest_first()
    {
        var changelog = await RealDebianData.ChangelogAsync();

        var between = changelog.Between("6.1.176-1", "6.1.187-1");

        Assert.Equal(["6.1.187-1", "6.1.180-1", "6.1.177-1"], between.Select(v => v.Version));
        Assert.All(between, v => Assert.Equal("bookworm-security", v.Distribution));
    }

    [Fact]
    public async Task A_wrapped_upstream_subject_is_one_item_with_its_cve_and_without_the_cve_list()
    {
        var changelog = await RealDebianData.ChangelogAsync();

        var item = changelog.Versions[0].Items.Single(i => i.Cves.Contains("CVE-2026-72114"));

        Assert.Equal("can: bcm: validate frame length in bcm_rx_setup() for RTR replies", item.Subject);
        Assert.Empty(item.Architectures);
    }

    [Fact]
    public async Task An_architecture_tag_is_kept_apart_from_the_subject()
    {
        var changelog = await RealDebianData.ChangelogAsync();

        var item = changelog.Versions[0].Items.Single(i => i.Cves.Contains("CVE-2026-64562"));

        Assert.Equal("KVM: nVMX: Hide shadow VMCS right after VMCLEAR", item.Subject);
        Assert.Equal(["x86"], item.Architectures);
    }

    [Fact]
    public async Task An_item_naming_several_cves_carries_each_of_them()
    {
        var changelog = await RealDebianData.ChangelogAsync();

        // "crypto: caam - use print_hex_dump_devel to guard key hex dumps\n      (CVE-2026-64316) (CVE-2026-64315)"
        var item = changelog.Versions.SelectMany(v => v.Items).First(i => i.Cves.Contains("CVE-2026-64316"));

        Assert.Equal(["CVE-2026-64316", "CVE-2026-64315"], item.Cves);
        Assert.Equal("crypto: caam - use print_hex_dump_devel to guard key hex dumps", item.Subject);
    }

    [Fact]
    public async Task No_subject_of_the_whole_changelog_keeps_a_cve_or_bug_annotation()
    {
        var changelog = await RealDebianData.ChangelogAsync();

        var items = changelog.Versions.SelectMany(v => v.Items).Where(i => i.Cves.Count > 0).ToList();

        Assert.True(items.Count > 1000, $"{items.Count} items with CVEs");
        Assert.All(items, i => Assert.DoesNotContain("CVE-", i.Subject));
        Assert.All(items, i => Assert.DoesNotContain("Closes:", i.Subject));
        // "Fix use-after-free in inet6_addr_del(). (CVE-2026-23010))." keeps its function's parentheses.
        Assert.Contains(items, i => i.Subject == "ipv6: Fix use-after-free in inet6_addr_del()");
    }

    [Fact]
    public async Task A_version_missing_from_the_changelog_is_refused_rather_than_taken_as_everything()
    {
        var changelog = await RealDebianData.ChangelogAsync();

        var refusal = Assert.Throws<CatchUpException>(() => changelog.Between("6.1.175-9", "6.1.187-1"));

        Assert.Contains("no entry for 6.1.175-9", refusal.Message);
    }

    [Fact]
    public async Task Versions_given_newest_first_are_refused()
    {
        var changelog = await RealDebianData.ChangelogAsync();

        Assert.Throws<CatchUpException>(() => changelog.Between("6.1.187-1", "6.1.176-1"));
    }
}
