namespace Kintsugi.Bundles;

/// <summary>
/// A bundle whose signature, publisher key, module digest and (when one was expected) target kernel
/// have been checked. Only <see cref="BundleVerifier"/> creates one.
/// </summary>
public sealed class VerifiedBundle
{
    internal VerifiedBundle(Bundle bundle, TrustedKey publisher)
    {
        Bundle = bundle;
        Publisher = publisher;
    }

    public Bundle Bundle { get; }

    public BundleManifest Manifest => Bundle.Manifest;

    /// <summary>The module bytes, matching the signed size and SHA-256.</summary>
    public ReadOnlyMemory<byte> Module => Bundle.Module;

    public TrustedKey Publisher { get; }
}

/// <summary>Decides whether a bundle may be used.</summary>
public static class BundleVerifier
{
    /// <summary>
    /// Checks, in order: the signing key is in <paramref name="trust"/> and not retired; the signature
    /// matches the header and manifest; the module matches the manifest's size and SHA-256; and, when
    /// <paramref name="expected"/> is given, the manifest targets that kernel release and build-id.
    /// Throws <see cref="BundleException"/> naming the first check that failed.
    /// </summary>
    public static VerifiedBundle Verify(Bundle bundle, TrustStore trust, KernelTarget? expected = null)
    {
        ArgumentNullException.ThrowIfNull(bundle);
        ArgumentNullException.ThrowIfNull(trust);
        var manifest = bundle.Manifest;

        var publisher = trust.Find(bundle.KeyId) ?? throw new BundleException(BundleFailure.UnknownKey,
            $"the bundle is signed by key {bundle.KeyId}, which is not in trust store {trust.Directory}; " +
            "if you trust that publisher, add its public key to the store (only then will its bundles verify)");
        if (publisher.State == KeyState.Retired)
            throw new BundleException(BundleFailure.RetiredKey,
                $"the bundle is signed by key {bundle.KeyId}, which is retired in trust store {trust.Directory}; " +
                "ask the publisher for the same bundle re-signed with a current key");

        if (!publisher.Key.VerifySignature(bundle.SignedBytes, bundle.Signature.Span))
            throw new BundleException(BundleFailure.BadSignature,
                $"the signature does not match the bundle's manifest for key {bundle.KeyId}: the bundle was altered " +
                $"after signing; do not use it and fetch it again from the publisher");

        var module = bundle.Module.Span;
        if (module.Length != manifest.ModuleSize || Sha256Digest.Of(module) != manifest.ModuleSha256)
            throw new BundleException(BundleFailure.ModuleMismatch,
                $"the module ({module.Length} bytes, sha256 {Sha256Digest.Of(module)}) is not the one the signed " +
                $"manifest names " +
                $"({manifest.ModuleSize} bytes, sha256 {manifest.ModuleSha256}): the module was altered; do not load " +
                $"it");

        if (expected is not null)
        {
            var target = manifest.Target ?? throw new BundleException(BundleFailure.WrongTarget,
                $"the bundle is a user-space patch for {manifest.Object}, not a kernel livepatch; " +
                "it is applied to processes (kintsugi agent, or kintsugi user apply), never loaded into a kernel");
            if (target.Release != expected.Release)
                throw new BundleException(BundleFailure.WrongTarget,
                    $"the bundle is for kernel {target.Release}, but this kernel is {expected.Release}; fetch the " +
                    $"bundle published for {expected.Release}");
            if (target.BuildId != expected.BuildId)
                throw new BundleException(BundleFailure.WrongTarget,
                    $"the bundle is for kernel {target.Release} with build-id {target.BuildId}, but this kernel's " +
                    $"build-id is {expected.BuildId}: " +
                    "same release, different build; a livepatch must only be loaded into the exact build it was made " +
                    "for");
        }
        return new VerifiedBundle(bundle, publisher);
    }

    /// <summary>
    /// Verifies a user-space bundle as <see cref="Verify"/> does (key, signature, module digest), and that it patches
    /// exactly the object with build-id <paramref name="expected"/>.
    /// </summary>
    public static VerifiedBundle VerifyUser(Bundle bundle, TrustStore trust, BuildId expected)
    {
        var verified = Verify(bundle, trust);
        var target = verified.Manifest.Object ?? throw new BundleException(BundleFailure.WrongTarget,
            $"the bundle is a kernel livepatch for {verified.Manifest.Target}, not a user-space patch");
        if (target.BuildId != expected)
            throw new BundleException(BundleFailure.WrongTarget,
                $"the bundle patches {target.Name} with build-id {target.BuildId}, not the object with build-id " +
                $"{expected}: " +
                "a user-space patch must only be applied to the exact build it was made for");
        return verified;
    }
}
