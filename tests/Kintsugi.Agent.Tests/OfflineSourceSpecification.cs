using Kintsugi.Bundles;

namespace Kintsugi.Agent.Tests;

/// <summary>Choosing what to apply from a directory of bundles (air-gapped machines).</summary>
public sealed class OfflineSourceSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly PublisherKey _key = PublisherKey.Generate();
    private readonly TrustStore _trust;
    private static readonly byte[] Module = File.ReadAllBytes("/bin/true");
    private static readonly KernelTarget Running = new(KernelRelease.Parse("6.1.0-56-cloud-amd64"), "6.1.158-1",
        BuildId.Parse("3b43fad5034874490492495d552c0af6a5fab235"));

    public OfflineSourceSpecification()
    {
        _trust = TrustStore.Open(_dir["trust"]);
        _trust.Add(_key.PublicKey);
        Directory.CreateDirectory(_dir["bundles"]);
    }

    public void Dispose()
    {
        _key.Dispose();
        _dir.Dispose();
    }

    private byte[] Write(string name, int level, KernelTarget? target = null, PublisherKey? key = null)
    {
        var bytes = Bundle.Create(Module, Inputs.Description(target ?? Running, level), key ?? _key).ToArray();
        File.WriteAllBytes(Path.Combine(_dir["bundles"], name), bytes);
        return bytes;
    }

    private OfflineSelection Select() => OfflineSource.Select(_dir["bundles"], _trust, Running);

    [Fact]
    public void The_highest_level_for_this_exact_kernel_is_chosen()
    {
        Write("a.bundle", 1);
        var best = Write("c.bundle", 3);
        Write("b.bundle", 2);
        var selection = Select();
        Assert.Equal(3, selection.Best!.Level);
        Assert.Equal(Sha256Digest.Of(best), selection.Best.Digest);
        Assert.Empty(selection.Refused);
    }

    [Fact]
    public void Bundles_for_other_releases_are_ignored_not_refused()
    {
        Write("mine.bundle", 1);
        Write("other.bundle", 9,
            new KernelTarget(KernelRelease.Parse("6.12.117+deb12-cloud-amd64"), null, BuildId.Parse("aa00bb11cc22")));
        var selection = Select();
        Assert.Equal(1, selection.Best!.Level);
        Assert.Equal(1, selection.Ignored);
        Assert.Empty(selection.Refused);
    }

    [Fact]
    public void A_tampered_higher_level_is_refused_and_the_best_good_level_still_chosen()
    {
        Write("good.bundle", 2);
        var bad = Write("bad.bundle", 3);
        bad[Inputs.ModuleOffset(bad) + 100] ^= 1;
        File.WriteAllBytes(Path.Combine(_dir["bundles"], "bad.bundle"), bad);
        var selection = Select();
        Assert.Equal(2, selection.Best!.Level);
        var refused = Assert.Single(selection.Refused);
        Assert.EndsWith("bad.bundle", refused.Source);
        Assert.Equal(3, refused.Level);
        Assert.Contains("the module was altered", refused.Reason);
    }

    [Fact]
    public void The_same_release_built_differently_is_refused()
    {
        Write("other-build.bundle", 4, Running with { BuildId = BuildId.Parse("00112233") });
        var selection = Select();
        Assert.Null(selection.Best);
        Assert.Contains("same release, different build", Assert.Single(selection.Refused).Reason);
    }

    [Fact]
    public void Foreign_and_truncated_bundles_are_refused()
    {
        using var foreign = PublisherKey.Generate();
        Write("foreign.bundle", 5, key: foreign);
        var truncated = Write("truncated.bundle", 6);
        File.WriteAllBytes(Path.Combine(_dir["bundles"], "truncated.bundle"), truncated[..^1]);
        var selection = Select();
        Assert.Null(selection.Best);
        Assert.Equal(2, selection.Refused.Count);
        Assert.Contains(selection.Refused, r => r.Reason.Contains("not in trust store"));
        Assert.Contains(selection.Refused, r => r.Reason.Contains("truncated") && r.Level is null);
    }

    [Fact]
    public void Lower_levels_than_the_one_chosen_are_not_reported()
    {
        using var foreign = PublisherKey.Generate();
        Write("old-foreign.bundle", 1, key: foreign);
        Write("good.bundle", 2);
        Assert.Empty(Select().Refused);
    }

    [Fact]
    public void A_missing_directory_is_reported()
    {
        var error = Assert.Throws<AgentException>(() => OfflineSource.Select(_dir["nowhere"], _trust, Running));
        Assert.Equal(ExitCode.NotFound, error.ExitCode);
    }
}
