using System.Text;

namespace Kintsugi.Bundles.Tests;

/// <summary>User-space bundles: the same envelope and signature, a target object (by build-id) instead of a
/// kernel.</summary>
public sealed class UserBundleSpecification : IDisposable
{
    private static readonly ObjectTarget Libcrypto =
        new("libcrypto.so.3", BuildId.Parse("0c6f1a2b3d4e5f60718293a4b5c6d7e8f9012345"), "libssl3", "3.0.17-1~deb12u2");

    private readonly Publisher _publisher = new();

    public void Dispose() => _publisher.Dispose();

    private byte[] SignUser(ObjectTarget? target = null) =>
        _publisher.Sign(Samples.Description() with
        {
            Target = null,
            Object = target ?? Libcrypto,
            PatchedFunctions = [new PatchedFunction("libcrypto.so.3", "EVP_DecryptUpdate")]
        });

    [Fact]
    public void A_user_space_bundle_names_its_object_and_verifies_for_exactly_that_build_id()
    {
        var bundle = Bundle.Read(SignUser());

        var verified = BundleVerifier.VerifyUser(bundle, _publisher.Trust, Libcrypto.BuildId);

        Assert.Equal(BundleKind.User, verified.Manifest.Kind);
        Assert.Equal(Libcrypto, verified.Manifest.Object);
        Assert.Null(verified.Manifest.Target);
        Assert.Equal(Libcrypto.BuildId, verified.Manifest.TargetBuildId);
        var json = Encoding.UTF8.GetString(bundle.ManifestJson.Span);
        Assert.StartsWith(
            """{"object":{"name":"libcrypto.so.3","buildId":"0c6f1a2b3d4e5f60718293a4b5c6d7e8f9012345",""" +
            "\"package\":\"libssl3\",", json);
    }

    [Fact]
    public void A_user_space_bundle_is_refused_for_another_build_of_the_object()
    {
        var bundle = Bundle.Read(SignUser());

        var refused = Assert.Throws<BundleException>(() =>
            BundleVerifier.VerifyUser(bundle, _publisher.Trust, Samples.Target.BuildId));

        Assert.Equal(BundleFailure.WrongTarget, refused.Failure);
        Assert.Contains("exact build", refused.Message);
    }

    [Fact]
    public void A_user_space_bundle_is_never_taken_for_a_kernel_livepatch_nor_the_reverse()
    {
        var user = Bundle.Read(SignUser());
        var kernel = Bundle.Read(_publisher.Sign());

        Assert.Equal(BundleFailure.WrongTarget, Assert.Throws<BundleException>(() =>
            BundleVerifier.Verify(user, _publisher.Trust, Samples.Target)).Failure);
        Assert.Equal(BundleFailure.WrongTarget, Assert.Throws<BundleException>(() =>
            BundleVerifier.VerifyUser(kernel, _publisher.Trust, Samples.Target.BuildId)).Failure);
    }

    [Fact]
    public void A_manifest_naming_both_a_kernel_and_an_object_is_refused_at_signing()
    {
        var refused =
            Assert.Throws<BundleException>(() => _publisher.Sign(Samples.Description() with { Object = Libcrypto }));

        Assert.Equal(BundleFailure.InvalidManifest, refused.Failure);
    }
}
