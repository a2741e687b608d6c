using System.Text;
using System.Text.Json.Nodes;

namespace Kintsugi.Bundles.Tests;

/// <summary>Signed release metadata and timestamps (docs/bundle-format.md, "Release metadata").</summary>
public sealed class ReleaseMetadataSpecification
{
    private static readonly DateTimeOffset Now = new(2026, 12, 4, 12, 0, 0, TimeSpan.Zero);

    private static ReleaseMetadataDescription
        Description(long version = 1, int current = 4, int minimum = 2, int[]? revoked = null) =>
        new(Samples.Target, version, current, minimum, revoked ?? [3], Now.AddDays(7));

    [Fact]
    public void Metadata_signed_by_a_trusted_publisher_verifies_and_says_which_levels_may_run()
    {
        using var publisher = new Publisher();
        var signed = SignedReleaseMetadata.Create(Description(), publisher.Key, Now);

        var read = SignedReleaseMetadata.Read(signed.Text);
        Assert.Equal(publisher.Key.Id, read.Verify(publisher.Trust, Samples.Target.BuildId).Id);
        var m = read.Metadata;
        Assert.Equal((1L, 4, 2), (m.Version, m.CurrentLevel, m.MinimumLevel));
        Assert.Equal([false, false, true, false, true, false], new[] { 0, 1, 2, 3, 4, 5 }.Select(m.Permits));
        Assert.Contains("revoked", m.Forbids(3));
        Assert.Contains("below the minimum level 2", m.Forbids(1));
        Assert.Contains("above the current level 4", m.Forbids(5));
        Assert.Null(read.Metadata.Target!.PackageVersion);
    }

    [Fact]
    public void Metadata_for_a_user_space_object_names_the_object_not_a_kernel_and_verifies_for_its_build_id()
    {
        using var publisher = new Publisher();
        var library = new ObjectTarget("libcrypto.so.3", BuildId.Parse("00112233445566778899aabbccddeeff00112233"),
            "openssl", "3.0.20-1~deb12u2");
        var signed = SignedReleaseMetadata.Create(
            new ReleaseMetadataDescription(null, 1, 2, 0, [1], Now.AddDays(7), library), publisher.Key, Now);

        var read = SignedReleaseMetadata.Read(signed.Text);
        read.Verify(publisher.Trust, library.BuildId);
        Assert.Equal((library.BuildId, "libcrypto.so.3", null), (read.Metadata.BuildId, read.Metadata.TargetName,
            read.Metadata.Target));
        // The build-id is the identity: the package version is not part of the statement.
        Assert.Equal(library with { PackageVersion = null }, read.Metadata.Object);
        Assert.Contains("revoked", read.Metadata.Forbids(1));
        Assert.Equal(BundleFailure.WrongTarget, Assert.Throws<BundleException>(() =>
            read.Verify(publisher.Trust, Samples.Target.BuildId)).Failure);
        Assert.Equal(BundleFailure.InvalidMetadata, Assert.Throws<BundleException>(() =>
            SignedReleaseMetadata.Create(new ReleaseMetadataDescription(Samples.Target, 1, 2, 0, [], Now.AddDays(7),
                library), publisher.Key, Now)).Failure);
    }

    [Fact]
    public void Metadata_whose_payload_was_altered_is_refused_even_when_it_still_parses()
    {
        using var publisher = new Publisher();
        var envelope =
            JsonNode.Parse(SignedReleaseMetadata.Create(Description(revoked: [3, 4]), publisher.Key, Now).Text)!;
        var payload = Encoding.UTF8.GetString(Convert.FromBase64String(envelope["signed"]!.GetValue<string>()));
        // A server that would like level 4 to run again drops it from the revoked list.
        envelope["signed"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(payload.Replace("[3,4]", "[3]")));

        var e = Assert.Throws<BundleException>(() =>
            SignedReleaseMetadata.Read(envelope.ToJsonString()).Verify(publisher.Trust));
        Assert.Equal(BundleFailure.BadSignature, e.Failure);
    }

    [Fact]
    public void Metadata_from_an_unknown_or_retired_key_or_for_another_build_is_refused()
    {
        using var publisher = new Publisher();
        using var stranger = PublisherKey.Generate();
        Assert.Equal(BundleFailure.UnknownKey, Assert.Throws<BundleException>(() =>
            SignedReleaseMetadata.Create(Description(), stranger, Now).Verify(publisher.Trust)).Failure);
        var signed = SignedReleaseMetadata.Create(Description(), publisher.Key, Now);
        Assert.Equal(BundleFailure.WrongTarget, Assert.Throws<BundleException>(() =>
            signed.Verify(publisher.Trust, BuildId.Parse("00112233445566778899aabbccddeeff00112233"))).Failure);
        publisher.Trust.Retire(publisher.Key.Id);
        Assert.Equal(BundleFailure.RetiredKey,
            Assert.Throws<BundleException>(() => signed.Verify(publisher.Trust)).Failure);
    }

    [Theory]
    [InlineData(1, 4, 5, new[] { 3 }, "minimum level 5")]
    [InlineData(1, 4, 2, new[] { 5 }, "revoked level 5")]
    [InlineData(0, 4, 2, new[] { 3 }, "version 0")]
    [InlineData(1, 4, 2, new[] { 0 }, "revoked level 0")]
    public void
        Inconsistent_metadata_cannot_be_signed(long version, int current, int minimum, int[] revoked, string message)
    {
        using var publisher = new Publisher();
        var e = Assert.Throws<BundleException>(() =>
            SignedReleaseMetadata.Create(Description(version, current, minimum, revoked), publisher.Key, Now));
        Assert.Equal(BundleFailure.InvalidMetadata, e.Failure);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void A_payload_not_in_canonical_form_is_refused()
    {
        using var publisher = new Publisher();
        var envelope = JsonNode.Parse(SignedReleaseMetadata.Create(Description(), publisher.Key, Now).Text)!;
        var payload = Encoding.UTF8.GetString(Convert.FromBase64String(envelope["signed"]!.GetValue<string>()));
        envelope["signed"] =
            Convert.ToBase64String(Encoding.UTF8.GetBytes(payload.Replace(",\"version\"", ", \"version\"")));
        var e = Assert.Throws<BundleException>(() => SignedReleaseMetadata.Read(envelope.ToJsonString()));
        Assert.Equal(BundleFailure.InvalidMetadata, e.Failure);
        Assert.Contains("canonical", e.Message);
    }

    [Fact]
    public void A_timestamp_key_extends_one_exact_metadata_document_and_cannot_sign_metadata()
    {
        using var publisher = new Publisher();
        using var timestampKey = PublisherKey.Generate();
        publisher.Trust.AddTimestampKey(timestampKey.PublicKey);
        var metadata = SignedReleaseMetadata.Create(Description(), publisher.Key, Now);
        var timestamp = SignedReleaseTimestamp.Create(metadata, Now.AddDays(30), timestampKey, Now);

        SignedReleaseTimestamp.Read(timestamp.Text).Verify(publisher.Trust, metadata);
        Assert.Equal(Now.AddDays(30), timestamp.Timestamp.Expires);

        // For other metadata (another version) the timestamp says nothing.
        var next = SignedReleaseMetadata.Create(Description(version: 2), publisher.Key, Now);
        Assert.Equal(BundleFailure.WrongTarget,
            Assert.Throws<BundleException>(() => timestamp.Verify(publisher.Trust, next)).Failure);
        // The timestamp key is not a publisher key: metadata (or a bundle) it signs is refused.
        Assert.Equal(BundleFailure.UnknownKey, Assert.Throws<BundleException>(() =>
            SignedReleaseMetadata.Create(Description(version: 3, revoked: []), timestampKey, Now)
            .Verify(publisher.Trust)).Failure);
        Assert.Equal(BundleFailure.UnknownKey, Samples.Refused(
            Bundle.Create(Samples.Module, Samples.Description(), timestampKey).ToArray(), publisher.Trust).Failure);
        // And a publisher key is not a timestamp key.
        Assert.Equal(BundleFailure.UnknownKey, Assert.Throws<BundleException>(() =>
            SignedReleaseTimestamp.Create(metadata, Now.AddDays(30), publisher.Key, Now)
            .Verify(publisher.Trust, metadata)).Failure);
    }

    [Fact]
    public void A_trust_store_keeps_timestamp_keys_apart_from_publisher_keys()
    {
        using var publisher = new Publisher();
        using var timestampKey = PublisherKey.Generate();
        publisher.Trust.AddTimestampKey(timestampKey.PublicKey);
        var reopened = TrustStore.Open(publisher.Trust.Directory);
        Assert.Equal(timestampKey.Id, Assert.Single(reopened.TimestampKeys).Id);
        Assert.Null(reopened.Find(timestampKey.Id));
        Assert.Equal(BundleFailure.TrustStore,
            Assert.Throws<BundleException>(() => reopened.AddTimestampKey(publisher.Key.PublicKey)).Failure);
        Assert.Equal(BundleFailure.TrustStore,
            Assert.Throws<BundleException>(() => reopened.Add(timestampKey.PublicKey)).Failure);
    }
}
