using System.Text;

namespace Kintsugi.Bundles.Tests;

/// <summary>Signing a module and verifying it: the happy path and what reading returns.</summary>
public sealed class SigningSpecification : IDisposable
{
    private readonly Publisher _publisher = new();

    public void Dispose() => _publisher.Dispose();

    [Fact]
    public void A_signed_bundle_verifies_and_returns_the_module_unchanged()
    {
        var bytes = _publisher.Sign();

        var verified = BundleVerifier.Verify(Bundle.Read(bytes), _publisher.Trust, Samples.Target);

        Assert.Equal(Samples.Module, verified.Module.ToArray());
        Assert.Equal(_publisher.Key.Id, verified.Publisher.Id);
        Assert.Equal(KeyState.Trusted, verified.Publisher.State);
    }

    [Fact]
    public void Reading_returns_the_manifest_fields_exactly()
    {
        var description = Samples.Description();
        var manifest = Bundle.Read(_publisher.Sign(description)).Manifest;

        Assert.Equal(Samples.Target, manifest.Target);
        Assert.Equal("6.1.0-56-cloud-amd64", manifest.Target!.Release.Value);
        Assert.Equal("5d3ab5a3c6f1a0b2e4d7c9f8a1b2c3d4e5f60718", manifest.Target!.BuildId.ToString());
        Assert.Equal("6.1.153-1", manifest.Target.PackageVersion);
        Assert.Equal(3, manifest.CumulativeLevel);
        Assert.Equal(description.Fixes.Count, manifest.Fixes.Count);
        for (var i = 0; i < description.Fixes.Count; i++)
        {
            Assert.Equal(description.Fixes[i].Id, manifest.Fixes[i].Id);
            Assert.Equal(description.Fixes[i].Description, manifest.Fixes[i].Description);
            Assert.Equal(description.Fixes[i].Cves, manifest.Fixes[i].Cves);
        }
        Assert.Equal(description.PatchedFunctions, manifest.PatchedFunctions);
        Assert.Equal(Samples.Module.Length, manifest.ModuleSize);
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Samples.Module)),
            manifest.ModuleSha256.ToString());
        Assert.Equal(_publisher.Key.Id, manifest.PublisherKeyId);
        Assert.Equal(Samples.CreatedAt, manifest.CreatedAt);
        Assert.Equal(TimeSpan.Zero, manifest.CreatedAt.Offset);
        Assert.Equal("0.1.0", manifest.BuilderVersion);
        Assert.Equal("6.1.158-1", manifest.EffectivePackageVersion);
        Assert.Equal(["CVE-2024-1086", "CVE-2024-26581", "CVE-2024-26925"], manifest.Cves.Select(c => c.Value));
    }

    [Fact]
    public void The_manifest_is_compact_json_with_the_documented_field_names()
    {
        var json = Encoding.UTF8.GetString(Bundle.Read(_publisher.Sign()).ManifestJson.Span);

        Assert.StartsWith(
            """{"target":{"release":"6.1.0-56-cloud-amd64","packageVersion":"6.1.153-1",""" +
            "\"buildId\":\"5d3ab5a3c6f1a0b2e4d7c9f8a1b2c3d4e5f60718\"},\"cumulativeLevel\":3," +
            "\"fixes\":[{\"id\":\"CVE-2024-1086\",\"cves\":[{\"id\":\"CVE-2024-1086\",\"severity\":\"high\"," +
            "\"published\":\"2024-01-31\"}],", json);
        Assert.Contains(""","patchedFunctions":[{"object":"vmlinux","function":"nft_verdict_init"},""", json);
        Assert.Contains(""","moduleSize":""", json);
        Assert.Contains(
            ""","createdAt":"2025-03-14T09:26:53+00:00","builderVersion":"0.1.0",""" +
            "\"effectivePackageVersion\":\"6.1.158-1\"}", json);
        Assert.DoesNotContain("\n", json);
    }

    [Fact]
    public void Absent_package_versions_are_written_as_null_and_read_back_as_null()
    {
        var bundle = Bundle.Read(_publisher.Sign(Samples.Description()
            with
        { EffectivePackageVersion = null, Target = Samples.Target with { PackageVersion = null } }));

        Assert.Null(bundle.Manifest.EffectivePackageVersion);
        Assert.Null(bundle.Manifest.Target!.PackageVersion);
        var json = Encoding.UTF8.GetString(bundle.ManifestJson.Span);
        Assert.Contains("\"packageVersion\":null", json);
        Assert.EndsWith("\"effectivePackageVersion\":null}", json);
    }

    [Fact]
    public void A_creation_time_with_an_offset_is_stored_as_the_same_instant_in_utc()
    {
        var local = new DateTimeOffset(2025, 3, 14, 11, 26, 53, TimeSpan.FromHours(2));
        var manifest = Bundle.Read(_publisher.Sign(Samples.Description() with { CreatedAt = local })).Manifest;

        Assert.Equal(Samples.CreatedAt, manifest.CreatedAt);
        Assert.Equal(TimeSpan.Zero, manifest.CreatedAt.Offset);
    }

    [Fact]
    public void A_saved_bundle_reads_back_byte_for_byte_from_a_file_and_from_a_forward_only_stream()
    {
        using var directory = new TemporaryDirectory();
        var bundle = Bundle.Create(Samples.Module, Samples.Description(), _publisher.Key);
        bundle.Save(directory["patch.kbundle"]);

        Assert.Equal(bundle.ToArray(), Bundle.ReadFile(directory["patch.kbundle"]).ToArray());
        using var stream = new ForwardOnlyStream(new MemoryStream(bundle.ToArray()));
        Assert.Equal(bundle.ToArray(), Bundle.Read(stream).ToArray());
    }

    [Fact]
    public void A_missing_bundle_file_is_refused_as_unreadable_naming_the_path()
    {
        using var directory = new TemporaryDirectory();

        var e = Assert.Throws<BundleException>(() => Bundle.ReadFile(directory["absent.kbundle"]));

        Assert.Equal(BundleFailure.Unreadable, e.Failure);
        Assert.Contains("absent.kbundle", e.Message);
    }

    [Fact]
    public void Signing_the_same_module_twice_gives_the_same_manifest()
    {
        var first = Bundle.Read(_publisher.Sign());
        var second = Bundle.Read(_publisher.Sign());

        Assert.Equal(first.ManifestJson.ToArray(), second.ManifestJson.ToArray());
    }

    [Fact]
    public void A_refusal_exits_with_input_refused()
    {
        var e = Assert.Throws<BundleException>(() => Bundle.Read("not a bundle"u8));

        Assert.Equal(ExitCode.InputRefused, e.ExitCode);
        Assert.IsAssignableFrom<KintsugiException>(e);
    }
}
