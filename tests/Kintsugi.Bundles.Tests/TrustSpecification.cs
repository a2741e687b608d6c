namespace Kintsugi.Bundles.Tests;

/// <summary>Which keys a trust store accepts, and how keys are rotated.</summary>
public sealed class TrustSpecification
{
    [Fact]
    public void A_bundle_signed_by_an_untrusted_key_is_refused_as_unknown()
    {
        using var trusted = new Publisher();
        using var stranger = PublisherKey.Generate();
        var bytes = Bundle.Create(Samples.Module, Samples.Description(), stranger).ToArray();

        var e = Samples.Refused(bytes, trusted.Trust);

        Assert.Equal(BundleFailure.UnknownKey, e.Failure);
        Assert.Contains(stranger.Id.ToString(), e.Message);
    }

    [Fact]
    public void A_bundle_signed_by_a_retired_key_is_refused()
    {
        using var publisher = new Publisher();
        var bytes = publisher.Sign();
        publisher.Trust.Retire(publisher.Key.Id);

        var e = Samples.Refused(bytes, publisher.Trust);

        Assert.Equal(BundleFailure.RetiredKey, e.Failure);
        Assert.Contains("re-signed with a current key", e.Message);
    }

    [Fact]
    public void Rotation_refuses_bundles_signed_by_the_old_key_and_accepts_them_re_signed_by_the_new_one()
    {
        using var publisher = new Publisher();
        var oldBundle = publisher.Sign();
        using var newKey = PublisherKey.Generate();

        publisher.Trust.Add(newKey.PublicKey);
        var reSigned = Bundle.Create(Bundle.Read(oldBundle).Module.Span, Samples.Description(), newKey).ToArray();
        BundleVerifier.Verify(Bundle.Read(oldBundle), publisher.Trust); // both accepted during the overlap
        publisher.Trust.Retire(publisher.Key.Id);

        Assert.Equal(BundleFailure.RetiredKey, Samples.Refused(oldBundle, publisher.Trust).Failure);
        var verified = BundleVerifier.Verify(Bundle.Read(reSigned), publisher.Trust, Samples.Target);
        Assert.Equal(newKey.Id, verified.Publisher.Id);
        Assert.Equal(Samples.Module, verified.Module.ToArray());
    }

    [Fact]
    public void Key_states_survive_reopening_the_store()
    {
        using var directory = new TemporaryDirectory();
        using var current = PublisherKey.Generate();
        using var old = PublisherKey.Generate();
        var store = TrustStore.Open(directory.Path);
        store.Add(old.PublicKey);
        store.Add(current.PublicKey);
        store.Retire(old.Id);

        var reopened = TrustStore.Open(directory.Path);

        Assert.Equal(KeyState.Trusted, reopened.Find(current.Id)?.State);
        Assert.Equal(KeyState.Retired, reopened.Find(old.Id)?.State);
        Assert.Equal(2, reopened.Keys.Count);
        Assert.True(File.Exists(Path.Combine(directory.Path, "trusted", current.Id + ".pem")));
        Assert.True(File.Exists(Path.Combine(directory.Path, "retired", old.Id + ".pem")));
        Assert.False(File.Exists(Path.Combine(directory.Path, "trusted", old.Id + ".pem")));
    }

    [Fact]
    public void A_key_present_as_both_trusted_and_retired_counts_as_retired()
    {
        using var directory = new TemporaryDirectory();
        using var key = PublisherKey.Generate();
        Directory.CreateDirectory(directory["trusted"]);
        Directory.CreateDirectory(directory["retired"]);
        key.PublicKey.Save(Path.Combine(directory["trusted"], key.Id + ".pem"));
        key.PublicKey.Save(Path.Combine(directory["retired"], key.Id + ".pem"));

        Assert.Equal(KeyState.Retired, TrustStore.Open(directory.Path).Find(key.Id)?.State);
    }

    [Fact]
    public void A_retired_key_cannot_be_trusted_again()
    {
        using var publisher = new Publisher();
        publisher.Trust.Retire(publisher.Key.Id);

        Assert.Equal(BundleFailure.TrustStore,
            Assert.Throws<BundleException>(() => publisher.Trust.Add(publisher.Key.PublicKey)).Failure);
    }

    [Fact]
    public void Retiring_an_unknown_key_is_refused()
    {
        using var directory = new TemporaryDirectory();
        using var key = PublisherKey.Generate();

        Assert.Equal(BundleFailure.TrustStore,
            Assert.Throws<BundleException>(() => TrustStore.Open(directory.Path).Retire(key.Id)).Failure);
    }

    [Fact]
    public void A_key_file_named_for_another_key_makes_the_store_refuse_to_open()
    {
        using var directory = new TemporaryDirectory();
        using var a = PublisherKey.Generate();
        using var b = PublisherKey.Generate();
        Directory.CreateDirectory(directory["trusted"]);
        a.PublicKey.Save(Path.Combine(directory["trusted"], b.Id + ".pem"));

        var e = Assert.Throws<BundleException>(() => TrustStore.Open(directory.Path));

        Assert.Equal(BundleFailure.TrustStore, e.Failure);
        Assert.Contains($"rename it to {a.Id}.pem", e.Message);
    }

    [Fact]
    public void A_damaged_key_file_makes_the_store_refuse_to_open()
    {
        using var directory = new TemporaryDirectory();
        Directory.CreateDirectory(directory["retired"]);
        File.WriteAllText(Path.Combine(directory["retired"], "0123456789abcdef0123456789abcdef.pem"),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");

        Assert.Equal(BundleFailure.TrustStore,
            Assert.Throws<BundleException>(() => TrustStore.Open(directory.Path)).Failure);
    }

    [Fact]
    public void A_missing_store_is_empty_and_refuses_every_bundle_as_unknown()
    {
        using var publisher = new Publisher();
        using var directory = new TemporaryDirectory();
        var empty = TrustStore.Open(directory["does-not-exist"]);

        Assert.Empty(empty.Keys);
        Assert.Equal(BundleFailure.UnknownKey, Samples.Refused(publisher.Sign(), empty).Failure);
    }
}

/// <summary>Publisher key files and key ids.</summary>
public sealed class KeySpecification
{
    [Fact]
    public void The_key_id_is_the_first_16_bytes_of_the_sha256_of_the_public_key_spki_der()
    {
        using var key = PublisherKey.Generate();
        using var ecdsa = System.Security.Cryptography.ECDsa.Create();
        ecdsa.ImportFromPem(key.PublicKey.ExportPem());

        var expected = Convert.ToHexStringLower(
            System.Security.Cryptography.SHA256.HashData(ecdsa.ExportSubjectPublicKeyInfo()))[..32];

        Assert.Equal(expected, key.Id.ToString());
        Assert.Equal(expected, PublisherKeyId.Of(key.PublicKey.SubjectPublicKeyInfo.Span).ToString());
    }

    [Fact]
    public void A_saved_private_key_is_owner_only_and_loads_back_signing_verifiable_bundles()
    {
        using var directory = new TemporaryDirectory();
        using var original = PublisherKey.Generate();
        original.Save(directory["publisher.key"]);
        original.PublicKey.Save(directory["publisher.pub"]);

        using var loaded = PublisherKey.Load(directory["publisher.key"]);
        var store = TrustStore.Open(directory["trust"]);
        store.Add(PublisherPublicKey.Load(directory["publisher.pub"]));

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(directory["publisher.key"]));
        Assert.StartsWith("-----BEGIN PRIVATE KEY-----", File.ReadAllText(directory["publisher.key"]));
        Assert.StartsWith("-----BEGIN PUBLIC KEY-----", File.ReadAllText(directory["publisher.pub"]));
        Assert.Equal(original.Id, loaded.Id);
        BundleVerifier.Verify(Bundle.Create(Samples.Module, Samples.Description(), loaded), store);
    }

    [Fact]
    public void Saving_a_private_key_never_overwrites_an_existing_file()
    {
        using var directory = new TemporaryDirectory();
        File.WriteAllText(directory["publisher.key"], "precious");
        using var key = PublisherKey.Generate();

        Assert.Equal(BundleFailure.KeyFile,
            Assert.Throws<BundleException>(() => key.Save(directory["publisher.key"])).Failure);
        Assert.Equal("precious", File.ReadAllText(directory["publisher.key"]));
    }

    [Fact]
    public void A_key_on_another_curve_is_refused()
    {
        using var p384 =
            System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP384);

        var e = Assert.Throws<BundleException>(() => PublisherPublicKey.FromPem(p384.ExportSubjectPublicKeyInfoPem()));
        Assert.Equal(BundleFailure.KeyFile, e.Failure);
        Assert.Contains("P-256", e.Message);
        Assert.Equal(BundleFailure.KeyFile,
            Assert.Throws<BundleException>(() => PublisherKey.FromPem(p384.ExportPkcs8PrivateKeyPem())).Failure);
    }

    [Fact]
    public void An_rsa_key_is_refused()
    {
        using var rsa = System.Security.Cryptography.RSA.Create(2048);

        Assert.Equal(BundleFailure.KeyFile, Assert.Throws<BundleException>(() =>
            PublisherPublicKey.FromPem(rsa.ExportSubjectPublicKeyInfoPem())).Failure);
        Assert.Equal(BundleFailure.KeyFile,
            Assert.Throws<BundleException>(() => PublisherKey.FromPem(rsa.ExportPkcs8PrivateKeyPem())).Failure);
    }

    [Fact]
    public void A_public_key_is_not_accepted_as_a_private_key_and_vice_versa()
    {
        using var key = PublisherKey.Generate();

        Assert.Contains("expected a private key",
            Assert.Throws<BundleException>(() => PublisherKey.FromPem(key.PublicKey.ExportPem())).Message);
        Assert.Contains("expected a public key",
            Assert.Throws<BundleException>(() => PublisherPublicKey.FromPem(key.ExportPem())).Message);
    }

    [Fact]
    public void Text_without_a_pem_block_is_refused()
    {
        Assert.Equal(BundleFailure.KeyFile,
            Assert.Throws<BundleException>(() => PublisherPublicKey.FromPem("hello")).Failure);
    }
}

/// <summary>A bundle is for one kernel build: release and GNU build-id.</summary>
public sealed class TargetSpecification : IDisposable
{
    private readonly Publisher _publisher = new();

    public void Dispose() => _publisher.Dispose();

    [Fact]
    public void The_exact_target_verifies()
    {
        var verified = BundleVerifier.Verify(Bundle.Read(_publisher.Sign()), _publisher.Trust, Samples.Target);

        Assert.Equal(Samples.Target, verified.Manifest.Target);
    }

    [Fact]
    public void Another_kernel_release_is_refused_as_wrong_target()
    {
        var running = Samples.Target with { Release = KernelRelease.Parse("6.1.0-57-cloud-amd64") };

        var e = Samples.Refused(_publisher.Sign(), _publisher.Trust, running);

        Assert.Equal(BundleFailure.WrongTarget, e.Failure);
        Assert.Contains("is for kernel 6.1.0-56-cloud-amd64, but this kernel is 6.1.0-57-cloud-amd64", e.Message);
    }

    [Fact]
    public void The_same_release_with_another_build_id_is_refused_as_wrong_target()
    {
        var running = Samples.Target with { BuildId = BuildId.Parse("00000000000000000000000000000000deadbeef") };

        var e = Samples.Refused(_publisher.Sign(), _publisher.Trust, running);

        Assert.Equal(BundleFailure.WrongTarget, e.Failure);
        Assert.Contains("this kernel's build-id is 00000000000000000000000000000000deadbeef", e.Message);
    }

    [Fact]
    public void A_different_package_version_alone_does_not_make_another_target()
    {
        BundleVerifier.Verify(Bundle.Read(_publisher.Sign()), _publisher.Trust,
            Samples.Target with { PackageVersion = null });
    }
}

/// <summary>What a manifest must contain; refused at signing time, before anything is written.</summary>
public sealed class ManifestSpecification : IDisposable
{
    private readonly PublisherKey _key = PublisherKey.Generate();

    public void Dispose() => _key.Dispose();

    public static TheoryData<string> InvalidDescriptions() =>
        ["level zero", "no fixes", "no patched functions", "duplicate fix id", "fix id with a space",
        "duplicate CVE in a fix",
         "empty description", "function with a slash", "duplicate patched function", "empty builder version",
         "control character in description"];

    [Theory]
    [MemberData(nameof(InvalidDescriptions))]
    public void An_invalid_description_is_refused_at_signing(string what)
    {
        var d = Samples.Description();
        var fix = d.Fixes[0];
        d = what switch
        {
            "level zero" => d with { CumulativeLevel = 0 },
            "no fixes" => d with { Fixes = [] },
            "no patched functions" => d with { PatchedFunctions = [] },
            "duplicate fix id" => d with { Fixes = [fix, fix] },
            "fix id with a space" => d with { Fixes = [fix with { Id = "my fix" }] },
            "duplicate CVE in a fix" => d with { Fixes = [fix with { Cves = [fix.Cves[0], fix.Cves[0]] }] },
            "empty description" => d with { Fixes = [fix with { Description = " " }] },
            "function with a slash" => d with { PatchedFunctions = [new PatchedFunction("vmlinux", "a/b")] },
            "duplicate patched function" =>
            d with { PatchedFunctions = [d.PatchedFunctions[0], d.PatchedFunctions[0]] },
            "empty builder version" => d with { BuilderVersion = "" },
            "control character in description" => d with { Fixes = [fix with { Description = "bell\a" }] },
            _ => throw new ArgumentOutOfRangeException(nameof(what)),
        };

        var e = Assert.Throws<BundleException>(() => Bundle.Create(Samples.Module, d, _key));

        Assert.Equal(BundleFailure.InvalidManifest, e.Failure);
    }

    [Fact]
    public void An_empty_module_is_refused_at_signing()
    {
        Assert.Equal(BundleFailure.InvalidManifest,
            Assert.Throws<BundleException>(() => Bundle.Create([], Samples.Description(), _key)).Failure);
    }

    [Theory]
    [InlineData("CVE-2024-1086", true)]
    [InlineData("CVE-2021-4154321", true)]
    [InlineData("cve-2024-1086", false)]
    [InlineData("CVE-24-1086", false)]
    [InlineData("CVE-2024-108", false)]
    [InlineData("CVE-2024-10x6", false)]
    public void Cve_ids_have_the_mitre_form(string text, bool valid) =>
        Assert.Equal(valid, CveId.TryParse(text, out _));
}
