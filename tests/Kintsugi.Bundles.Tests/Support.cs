namespace Kintsugi.Bundles.Tests;

internal static partial class Samples
{
    public static BundleException Refused(byte[] bytes, TrustStore trust, KernelTarget? expected = null) =>
        Assert.Throws<BundleException>(() => BundleVerifier.Verify(Bundle.Read(bytes), trust, expected));
}

/// <summary>A publisher key with a trust store that trusts it: the usual setup.</summary>
internal sealed class Publisher : IDisposable
{
    private readonly TemporaryDirectory _directory = new();

    public PublisherKey Key { get; } = PublisherKey.Generate();

    public TrustStore Trust { get; }

    public Publisher()
    {
        Trust = TrustStore.Open(_directory["trust"]);
        Trust.Add(Key.PublicKey);
    }

    public byte[] Sign(BundleDescription? description = null, byte[]? module = null) =>
        Bundle.Create(module ?? Samples.Module, description ?? Samples.Description(), Key).ToArray();

    public void Dispose()
    {
        Key.Dispose();
        _directory.Dispose();
    }
}

