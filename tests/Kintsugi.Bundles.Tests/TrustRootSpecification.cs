using Kintsugi.Testing;

namespace Kintsugi.Bundles.Tests;

/// <summary>Signed trust-root updates: only a pinned root key can change which publisher keys a machine trusts, and
/// only forward.</summary>
public sealed class TrustRootSpecification : IDisposable
{
    private readonly TemporaryDirectory _directory = new();
    private readonly PublisherKey _root = PublisherKey.Generate();
    private readonly PublisherKey _old = PublisherKey.Generate();
    private readonly PublisherKey _new = PublisherKey.Generate();
    private readonly PublisherKey _timestamp = PublisherKey.Generate();

    public TrustRootSpecification()
    {
        var trust = TrustStore.Open(_directory["trust"]);
        trust.AddRootKey(_root.PublicKey);
        trust.Add(_old.PublicKey);
    }

    public void Dispose()
    {
        foreach (var key in new[] { _root, _old, _new, _timestamp }) key.Dispose();
        _directory.Dispose();
    }

    private TrustStore Trust => TrustStore.Open(_directory["trust"]);

    private SignedTrustRoot Rotation(long version, PublisherKey? signer = null) =>
        SignedTrustRoot.Create(version, [_new.PublicKey], [_old.PublicKey], [_timestamp.PublicKey], signer ?? _root);

    [Fact]
    public void An_update_signed_by_the_pinned_root_key_retires_the_old_key_trusts_the_new_one_and_is_idempotent()
    {
        var changes = Trust.Apply(SignedTrustRoot.Read(Rotation(1).Text));

        Assert.Contains($"retired key {_old.Id}", changes);
        Assert.Contains($"trusted key {_new.Id}", changes);
        Assert.Equal(KeyState.Retired, Trust.Find(_old.Id)!.State);
        Assert.Equal(KeyState.Trusted, Trust.Find(_new.Id)!.State);
        Assert.NotNull(Trust.FindTimestampKey(_timestamp.Id));
        Assert.Equal(1, Trust.AppliedRoot!.Root.Version);
        Assert.Empty(Trust.Apply(
            SignedTrustRoot.Read(File.ReadAllText(Path.Combine(_directory["trust"], SignedTrustRoot.FileName)))));
    }

    [Fact]
    public void A_publisher_key_or_an_unknown_key_cannot_sign_a_trust_root_update()
    {
        var byPublisher = Assert.Throws<BundleException>(() => Trust.Apply(Rotation(1, _old)));
        Assert.Equal(BundleFailure.UnknownKey, byPublisher.Failure);
        Assert.Contains("not a root key", byPublisher.Message);
        using var stranger = PublisherKey.Generate();
        Assert.Equal(BundleFailure.UnknownKey,
            Assert.Throws<BundleException>(() => Trust.Apply(Rotation(1, stranger))).Failure);
        Assert.Equal(KeyState.Trusted, Trust.Find(_old.Id)!.State);
        Assert.Null(Trust.Find(_new.Id));
    }

    [Fact]
    public void An_altered_update_is_refused()
    {
        var text = Rotation(1).Text;
        var envelope = System.Text.Json.Nodes.JsonNode.Parse(text)!;
        var payload =
            System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(envelope["signed"]!.GetValue<string>()));
        envelope["signed"] = Convert.ToBase64String(
            System.Text.Encoding.UTF8.GetBytes(payload.Replace("\"version\":1", "\"version\":9")));

        var e = Assert.Throws<BundleException>(() => Trust.Apply(SignedTrustRoot.Read(envelope.ToJsonString())));

        Assert.Equal(BundleFailure.BadSignature, e.Failure);
        Assert.Equal(KeyState.Trusted, Trust.Find(_old.Id)!.State);
    }

    [Fact]
    public void An_older_update_or_a_different_one_under_the_same_version_is_refused()
    {
        Trust.Apply(Rotation(2));

        Assert.Contains("older than version 2", Assert.Throws<BundleException>(() => Trust.Apply(Rotation(1))).Message);
        Assert.Contains("two statements under one version",
            Assert.Throws<BundleException>(() => Trust.Apply(SignedTrustRoot.Create(2, [], [], [], _root))).Message);
    }

    [Fact]
    public void An_update_cannot_bring_a_retired_key_back()
    {
        Trust.Apply(Rotation(1));

        var changes = Trust.Apply(SignedTrustRoot.Create(2, [_old.PublicKey, _new.PublicKey], [], [], _root));

        Assert.Contains($"key {_old.Id} stays retired (the update lists it as trusted)", changes);
        Assert.Equal(KeyState.Retired, Trust.Find(_old.Id)!.State);
    }

    [Fact]
    public void A_root_key_is_kept_apart_from_publisher_and_timestamp_keys()
    {
        Assert.Throws<BundleException>(() => Trust.Add(_root.PublicKey));
        Assert.Throws<BundleException>(() => Trust.AddTimestampKey(_root.PublicKey));
        Assert.Throws<BundleException>(() => Trust.AddRootKey(_old.PublicKey));
    }
}
