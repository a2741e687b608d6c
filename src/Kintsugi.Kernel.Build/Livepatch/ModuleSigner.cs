using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Kintsugi.Kernel.Build.Livepatch;

/// <summary>
/// The operator's module signing key, as the kernel's own <c>scripts/sign-file</c> takes it: a PEM private key
/// and its X.509 certificate (PEM or DER). The certificate may sit in the key's file, as in the kernel's own
/// <c>certs/signing_key.pem</c>.
/// </summary>
public sealed record ModuleSigningKey(string PrivateKeyFile, string CertificateFile, string HashAlgorithm = "sha256")
{
    /// <summary>Reads the certificate now, so that a bad key fails before a minute of compiling, not after.</summary>
    public ManifestSigner Describe()
    {
        if (!File.Exists(PrivateKeyFile))
            throw new ModuleBuildException($"signing key {PrivateKeyFile} does not exist");
        if (HashAlgorithm is not ("sha256" or "sha384" or "sha512"))
            throw new ModuleBuildException(
                $"signature hash '{HashAlgorithm}' is not one the kernel verifies here: use sha256, sha384 or sha512");
        var certificate = LoadCertificate(CertificateFile);
        return new ManifestSigner(certificate.Subject, Convert.ToHexStringLower(SHA256.HashData(certificate.RawData)),
            HashAlgorithm);
    }

    private static X509Certificate2 LoadCertificate(string path)
    {
        if (!File.Exists(path)) throw new ModuleBuildException($"signing certificate {path} does not exist");
        try
        {
            var bytes = File.ReadAllBytes(path);
            var text = Encoding.ASCII.GetString(bytes);
            const string begin = "-----BEGIN CERTIFICATE-----", end = "-----END CERTIFICATE-----";
            var start = text.IndexOf(begin, StringComparison.Ordinal);
            if (start < 0) return X509CertificateLoader.LoadCertificate(bytes);
            var stop = text.IndexOf(end, start, StringComparison.Ordinal);
            if (stop < 0) throw new ModuleBuildException($"{path}: the PEM certificate has no END line");
            return X509Certificate2.CreateFromPem(text.AsSpan(start, stop + end.Length - start));
        }
        catch (CryptographicException e)
        {
            throw new ModuleBuildException($"{path} holds no readable X.509 certificate (PEM or DER): {e.Message}", e);
        }
    }
}

/// <summary>Who signed a module, as recorded in its manifest.</summary>
public sealed record ManifestSigner(string Subject, string CertificateSha256, string Hash);

/// <summary>
/// Appends a kernel module signature with the target's own <c>scripts/sign-file</c>: the kernel defines the
/// format (a PKCS#7 blob, a <c>struct module_signature</c> and a marker string) and its tool is the reference.
/// </summary>
public static class ModuleSigner
{
    public static ReadOnlySpan<byte> Marker => "~Module signature appended~\n"u8;

    public static bool IsSigned(ReadOnlySpan<byte> module) => module.EndsWith(Marker);

    /// <summary>Looks for sign-file in the prepared source tree first (built there by <c>make prepare</c>), then the
    /// headers.</summary>
    public static async Task SignAsync(string module, ModuleSigningKey key, IReadOnlyList<string> kernelTrees,
        CancellationToken cancellation)
    {
        var signFile = kernelTrees.Select(t => Path.Combine(t, "scripts", "sign-file")).FirstOrDefault(File.Exists)
            ?? throw new ModuleBuildException(
                $"the target has no scripts/sign-file (looked in {string.Join(", ", kernelTrees)}); build it with " +
            $"'make scripts' in the source tree");
        var result = await ExternalCommand.RunAsync(signFile,
            [key.HashAlgorithm, key.PrivateKeyFile, key.CertificateFile, module], cancellation: cancellation);
        if (!result.Succeeded)
            throw new ModuleBuildException(
                $"sign-file could not sign {Path.GetFileName(module)}: {result.StandardError.Trim()}");
        if (!IsSigned(await File.ReadAllBytesAsync(module, cancellation)))
            throw new ModuleBuildException($"sign-file exited 0 but {module} carries no module signature");
    }
}
