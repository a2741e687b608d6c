using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Kintsugi.Protocol;

/// <summary>
/// The one rule for a server certificate given as a file (the CLI's <c>--ca</c>, the agent's <c>server-ca</c>):
/// the server must present one of the file's certificates (pinned, as its generated self-signed tls/server.crt
/// is) or one a certificate of the file issued, and it must name the host connected to. The system's CAs play no
/// part: with a file given, a publicly trusted certificate for another name or from another CA is refused.
/// </summary>
public sealed class PinnedServerCertificates
{
    private readonly X509Certificate2Collection trusted;

    public PinnedServerCertificates(X509Certificate2Collection certificates)
    {
        if (certificates.Count == 0) throw new ArgumentException("no certificate to trust", nameof(certificates));
        trusted = certificates;
    }

    /// <summary>Why the last certificate presented was refused (for the error a user sees), or null.</summary>
    public string? LastRefusal { get; private set; }

    /// <summary>The callback for <see
    /// cref="SslClientAuthenticationOptions.RemoteCertificateValidationCallback"/>.</summary>
    public bool Validate(object sender, System.Security.Cryptography.X509Certificates.X509Certificate? certificate,
        X509Chain? presented, SslPolicyErrors errors)
    {
        LastRefusal = Refusal(certificate, presented, errors);
        return LastRefusal is null;
    }

    /// <summary>Null when the certificate is accepted, else why not. <paramref name="errors"/> is what the TLS
    /// stack found; only its name check is used (its chain verdict is against the system's CAs).</summary>
    public string? Refusal(System.Security.Cryptography.X509Certificates.X509Certificate? certificate,
        X509Chain? presented, SslPolicyErrors errors)
    {
        if (certificate is null) return "the server presented no certificate";
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
            return "the server's certificate does not name the host connected to (the server names more hosts " +
                "with --tls-name, or connect by a name its certificate has)";
        var raw = certificate.GetRawCertData();
        if (trusted.Any(t => t.RawData.AsSpan().SequenceEqual(raw))) return null;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(trusted);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (presented is not null)
            foreach (var element in presented.ChainElements) chain.ChainPolicy.ExtraStore.Add(element.Certificate);
        using var leaf = X509CertificateLoader.LoadCertificate(raw);
        return chain.Build(leaf) ? null
            : $"the server's certificate ({leaf.Subject}) is neither the pinned one nor issued by it";
    }
}
