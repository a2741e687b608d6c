namespace Kintsugi.Kernel.CatchUp.Tests;

/// <summary>CVEs of Debian's changelog matched to the changed files of linux-source-6.1 6.1.176-1 →
/// 6.1.187-1.</summary>
public sealed class CveMatcherSpecification
{
    private static async Task<CveMapping> MappingOf(string cve)
    {
        var changelog = await RealDebianData.ChangelogAsync();
        var difference = await RealDebianData.DifferenceAsync();
        var items = changelog.Between(RealDebianData.From.Version, RealDebianData.To.Version).SelectMany(v => v.Items);
        return CveMatcher.Match(items, difference.Files).Single(m => m.Cve == cve);
    }

    [Fact]
    public async Task A_function_named_in_the_subject_and_changed_under_the_prefix_path_is_a_high_confidence_match()
    {
        // "can: bcm: validate frame length in bcm_rx_setup() for RTR replies"
        var mapping = await MappingOf("CVE-2026-72114");

        var match = Assert.Single(mapping.Files);
        Assert.Equal("net/can/bcm.c", match.Path);
        Assert.Equal("function and path", match.How);
        Assert.Equal(MatchConfidence.High, match.Confidence);
        Assert.Contains("bcm_rx_setup", match.Evidence);
    }

    [Fact]
    public async Task A_function_named_in_the_subject_is_found_behind_leading_underscores()
    {
        // "af_unix: Set gc_in_progress to true in unix_gc()." where the 6.1 backport changes __unix_gc.
        var mapping = await MappingOf("CVE-2026-53361");

        var match = Assert.Single(mapping.Files);
        Assert.Equal("net/unix/garbage.c", match.Path);
        Assert.Contains("__unix_gc", match.Evidence);
    }

    [Fact]
    public async Task A_subject_prefix_naming_a_directory_and_a_file_maps_to_that_file_by_path()
    {
        // "net/sched: act_tunnel_key: Defer dst_release to RCU callback"
        var mapping = await MappingOf("CVE-2026-68377");

        var match = Assert.Single(mapping.Files);
        Assert.Equal("net/sched/act_tunnel_key.c", match.Path);
        Assert.Equal("path", match.How);
        Assert.Equal(MatchConfidence.Medium, match.Confidence);
    }

    [Fact]
    public async Task Selftests_and_documentation_are_never_what_a_cve_maps_to()
    {
        var changelog = await RealDebianData.ChangelogAsync();
        var difference = await RealDebianData.DifferenceAsync();
        var items = changelog.Between(RealDebianData.From.Version, RealDebianData.To.Version).SelectMany(v => v.Items);

        var mapped = CveMatcher.Match(items, difference.Files).SelectMany(m => m.Files).ToList();

        Assert.DoesNotContain(mapped, f => f.Path.StartsWith("tools/", StringComparison.Ordinal)
            || f.Path.StartsWith("Documentation/", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Every_match_says_how_it_was_made()
    {
        var changelog = await RealDebianData.ChangelogAsync();
        var difference = await RealDebianData.DifferenceAsync();
        var items = changelog.Between(RealDebianData.From.Version, RealDebianData.To.Version).SelectMany(v => v.Items);

        var mappings = CveMatcher.Match(items, difference.Files);

        Assert.All(mappings.SelectMany(m => m.Files), f => Assert.False(string.IsNullOrEmpty(f.Evidence)));
        Assert.All(mappings.SelectMany(m => m.Files),
            f => Assert.Contains(f.Path, difference.Files.Select(c => c.Path)));
        // Most CVEs of an update are tied to a change; the rest are reported as unmapped, never dropped.
        Assert.True(mappings.Count(m => m.Files.Count > 0) > mappings.Count / 2,
            $"{mappings.Count(m => m.Files.Count > 0)} of {mappings.Count} mapped");
    }

    [Fact]
    public void A_subject_prefix_is_split_from_its_description()
    {
        Assert.Equal(("netfilter: nf_tables", "reject QUEUE/DROP verdict parameters"),
            CveMatcher.SplitSubject("netfilter: nf_tables: reject QUEUE/DROP verdict parameters"));
    }
}
