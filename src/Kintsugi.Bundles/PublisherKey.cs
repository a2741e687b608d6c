using System.Security.Cryptography;

namespace Kintsugi.Bundles;

/// <summary>
/// A publisher's private signing key: ECDSA over NIST P-256 with SHA-256. Kept offline by the patch
/// engineer; stored as an unencrypted PKCS#8 PEM (<c>-----BEGIN PRIVATE KEY-----</c>) with mode 0600.
/// </summary>
public sealed class PublisherKey : IDisposable
{
    private readonly ECDsa _ecdsa;

    public PublisherPublicKey PublicKey { get; }

    public PublisherKeyId Id => PublicKey.Id;

    private PublisherKey(ECDsa ecdsa)
    {
        _ecdsa = ecdsa;
        PublicKey = PublisherPublicKey.FromSubjectPublicKeyInfo(ecdsa.ExportSubjectPublicKeyInfo());
    }

    /// <summary>Creates a new random P-256 key.</summary>
    public static PublisherKey Generate() => new(ECDsa.Create(ECCurve.NamedCurves.nistP256));

    /// <summary>Reads a PKCS#8 PEM private key. Throws <see cref="BundleException"/> for anything else.</summary>
    public static PublisherKey FromPem(string pem)
    {
        var der = KeyPem.Decode(pem, "PRIVATE KEY", "a private key file (PKCS#8, -----BEGIN PRIVATE KEY-----)");
        var ecdsa = ECDsa.Create();
        try
        {
            ecdsa.ImportPkcs8PrivateKey(der, out var read);
            if (read != der.Length) throw new BundleException(BundleFailure.KeyFile,
                "the private key has trailing bytes after its PKCS#8 structure");
            KeyPem.RequireP256(ecdsa);
            return new PublisherKey(ecdsa);
        }
        catch (CryptographicException e)
        {
            ecdsa.Dispose();
            throw new BundleException(BundleFailure.KeyFile, $"the private key is not an EC P-256 PKCS#8 key " +
                $"({e.Message}); create one with `kintsugi keys generate`", e);
        }
        catch
        {
            ecdsa.Dispose();
            throw;
        }
    }

    public static PublisherKey Load(string path) => FromPem(KeyPem.ReadFile(path, "private key"));

    public string ExportPem() => PemEncoding.WriteString("PRIVATE KEY", _ecdsa.ExportPkcs8PrivateKey());

    /// <summary>Writes the private key with mode 0600; refuses to overwrite an existing file.</summary>
    public void Save(string path)
    {
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        };
        try
        {
            using var writer = new StreamWriter(path, System.Text.Encoding.ASCII, options);
            writer.Write(ExportPem());
        }
        catch (IOException e) when (File.Exists(path))
        {
            throw new BundleException(BundleFailure.KeyFile,
                $"{path} already exists; refusing to overwrite a private key (move it away first)", e);
        }
    }

    /// <summary>Signs data (ECDSA P-256, SHA-256, IEEE P1363 r||s: 64 bytes). Internal: only the bundle writer
    /// signs.</summary>
    internal byte[] Sign(ReadOnlySpan<byte> data) =>
        _ecdsa.SignData(data, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);

    public void Dispose() => _ecdsa.Dispose();

    public override string ToString() => $"publisher key {Id}";
}

/// <summary>
/// A publisher's public key as agents and trust stores hold it: a P-256 SubjectPublicKeyInfo, stored as
/// PEM (<c>-----BEGIN PUBLIC KEY-----</c>). Its <see cref="Id"/> is the first 16 bytes of the SHA-256 of
/// that DER, in hex.
/// </summary>
public sealed class PublisherPublicKey : IEquatable<PublisherPublicKey>
{
    public const int SignatureLength = 64;

    private readonly byte[] _spki;

    public PublisherKeyId Id { get; }

    /// <summary>The DER SubjectPublicKeyInfo (uncompressed point), the bytes the id is computed from.</summary>
    public ReadOnlyMemory<byte> SubjectPublicKeyInfo => _spki;

    private PublisherPublicKey(byte[] spki)
    {
        _spki = spki;
        Id = PublisherKeyId.Of(spki);
    }

    public static PublisherPublicKey FromSubjectPublicKeyInfo(ReadOnlySpan<byte> der)
    {
        using var ecdsa = ECDsa.Create();
        try
        {
            ecdsa.ImportSubjectPublicKeyInfo(der, out var read);
            if (read != der.Length) throw new BundleException(BundleFailure.KeyFile,
                "the public key has trailing bytes after its SubjectPublicKeyInfo");
        }
        catch (CryptographicException e)
        {
            throw new BundleException(BundleFailure.KeyFile,
                $"the public key is not an EC SubjectPublicKeyInfo ({e.Message})", e);
        }
        KeyPem.RequireP256(ecdsa);
        // Re-export so that one key has one byte form (and so one id).
        return new PublisherPublicKey(ecdsa.ExportSubjectPublicKeyInfo());
    }

    public static PublisherPublicKey FromPem(string pem) =>
        FromSubjectPublicKeyInfo(
        KeyPem.Decode(pem, "PUBLIC KEY", "a public key file (SubjectPublicKeyInfo, -----BEGIN PUBLIC KEY-----)"));

    public static PublisherPublicKey Load(string path)
    {
        try { return FromPem(KeyPem.ReadFile(path, "public key")); }
        catch (BundleException e) when (e.Failure == BundleFailure.KeyFile
            && !e.Message.StartsWith(path, StringComparison.Ordinal))
        {
            throw new BundleException(BundleFailure.KeyFile, $"{path}: {e.Message}", e);
        }
    }

    public string ExportPem() => PemEncoding.WriteString("PUBLIC KEY", _spki);

    public void Save(string path) => File.WriteAllText(path, ExportPem());

    /// <summary>Whether <paramref name="signature"/> (64-byte IEEE P1363 r||s) is this key's ECDSA P-256 SHA-256
    /// signature of <paramref name="data"/>.</summary>
    public bool VerifySignature(ReadOnlySpan<byte> data, ReadOnlySpan<byte> signature)
    {
        if (signature.Length != SignatureLength) return false;
        using var ecdsa = ECDsa.Create();
        ecdsa.ImportSubjectPublicKeyInfo(_spki, out _);
        return ecdsa.VerifyData(data, signature, HashAlgorithmName.SHA256,
            DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
    }

    public bool Equals(PublisherPublicKey? other) => other is not null && _spki.AsSpan().SequenceEqual(other._spki);

    public override bool Equals(object? obj) => Equals(obj as PublisherPublicKey);

    public override int GetHashCode() => Id.GetHashCode();

    public override string ToString() => $"publisher public key {Id}";
}

internal static class KeyPem
{
    /// <summary>Key files are small; anything larger than this is not a key.</summary>
    public const int MaxFileLength = 64 * 1024;

    private const string P256Oid = "1.2.840.10045.3.1.7";

    public static string ReadFile(string path, string what)
    {
        try
        {
            using var stream = File.OpenRead(path);
            if (stream.Length > MaxFileLength) throw new BundleException(BundleFailure.KeyFile,
                $"{path} is {stream.Length} bytes, too large to be a {what} file");
            using var reader = new StreamReader(stream, System.Text.Encoding.ASCII);
            return reader.ReadToEnd();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BundleException(BundleFailure.KeyFile, $"cannot read {what} {path}: {e.Message}", e);
        }
    }

    public static byte[] Decode(string pem, string label, string expected)
    {
        if (pem.Length > MaxFileLength)
            throw new BundleException(BundleFailure.KeyFile, $"the text is too large to be {expected}");
        if (!PemEncoding.TryFind(pem, out var fields))
            throw new BundleException(BundleFailure.KeyFile, $"no PEM block found; expected {expected}");
        var found = pem[fields.Label];
        if (!found.SequenceEqual(label))
        {
            var hint = found.SequenceEqual("ENCRYPTED PRIVATE KEY")
                ? " (encrypted keys are not supported; keep the key offline instead)" : "";
            throw new BundleException(BundleFailure.KeyFile,
                $"found a PEM block labelled '{found}'; expected {expected}{hint}");
        }
        if (pem.AsSpan(fields.Location.End..).Trim().Length != 0
            || pem.AsSpan(..fields.Location.Start).Trim().Length != 0)
            throw new BundleException(BundleFailure.KeyFile,
                $"the file holds more than one PEM block; expected only {expected}");
        var der = new byte[fields.DecodedDataLength];
        if (!Convert.TryFromBase64Chars(pem.AsSpan(fields.Base64Data), der, out var written) || written != der.Length)
            throw new BundleException(BundleFailure.KeyFile,
                $"the PEM block's base64 is malformed; expected {expected}");
        return der;
    }

    public static void RequireP256(ECDsa ecdsa)
    {
        ECParameters parameters;
        try { parameters = ecdsa.ExportParameters(false); }
        catch (CryptographicException e)
        {
            throw new BundleException(BundleFailure.KeyFile,
            $"the key's curve cannot be read ({e.Message})", e);
        }
        var curve = parameters.Curve;
        var isP256 = curve.IsNamed && (curve.Oid.Value == P256Oid
            || curve.Oid.FriendlyName is "nistP256" or "ECDSA_P256" or "prime256v1" or "secp256r1");
        if (!isP256 || ecdsa.KeySize != 256)
            throw new BundleException(BundleFailure.KeyFile, $"the key is on curve " +
                $"{curve.Oid.FriendlyName ?? curve.Oid.Value ?? "(explicit)"}; publisher keys are ECDSA P-256");
    }
}
