using System.Net;
using System.Net.NetworkInformation;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Kintsugi.Server;

/// <summary>
/// The server's TLS certificate: the one given, or a self-signed ECDSA P-256 certificate generated on first
/// run and kept in the data directory (<c>tls/server.pfx</c>, with its public part in <c>tls/server.crt</c>
/// for agents to pin). It names this host, localhost, every local address and 10.0.2.2 (how a QEMU guest
/// reaches the host).
/// </summary>
public static class Tls
{
    public static X509Certificate2 Load(ServerOptions options, Action<string> report)
    {
        if (options.TlsCertificate is { } given)
        {
            try
            {
                return options.TlsKey is { } key
                    ? X509Certificate2.CreateFromPemFile(given, key)
                    : X509CertificateLoader.LoadPkcs12FromFile(given, password: null);
            }
            catch (Exception e) when (e is CryptographicException or IOException)
            {
                throw new ServerConfigurationException($"cannot load the TLS certificate {given}: {e.Message}", e);
            }
        }
        var directory = Path.Combine(options.DataDirectory, "tls");
        var pfx = Path.Combine(directory, "server.pfx");
        if (File.Exists(pfx)) return X509CertificateLoader.LoadPkcs12FromFile(pfx, password: null);
        OwnerOnly.CreateDirectory(directory);
        var certificate = Generate(options.TlsNames);
        OwnerOnly.Write(pfx, certificate.Export(X509ContentType.Pkcs12));
        File.WriteAllText(Path.Combine(directory, "server.crt"), certificate.ExportCertificatePem() + "\n");
        report($"generated a self-signed TLS certificate {Path.Combine(directory, "server.crt")} (SHA-256 " +
            $"{Fingerprint(certificate)}); give agents that file to trust");
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), password: null);
    }

    public static string Fingerprint(X509Certificate2 certificate) =>
        Convert.ToHexStringLower(certificate.GetCertHash(HashAlgorithmName.SHA256));

    private static X509Certificate2 Generate(IReadOnlyList<string> extraNames)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var host = Dns.GetHostName();
        var request = new CertificateRequest($"CN={host}, O=Kintsugi patch server", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        foreach (var dns in new[] { host, "localhost" }.Concat(extraNames.Where(n => !IPAddress.TryParse(n, out _)))
            .Distinct()) names.AddDnsName(dns);
        var addresses = new HashSet<IPAddress> { IPAddress.Loopback, IPAddress.IPv6Loopback,
            IPAddress.Parse("10.0.2.2") };
        foreach (var n in extraNames) if (IPAddress.TryParse(n, out var a)) addresses.Add(a);
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
                foreach (var unicast in nic.GetIPProperties().UnicastAddresses) addresses.Add(unicast.Address);
        }
        catch (NetworkInformationException) { /* the names above still work */ }
        foreach (var address in addresses) names.AddIpAddress(address);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var now = DateTimeOffset.UtcNow;
        return request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));
    }
}

/// <summary>The server cannot start as configured.</summary>
public sealed class ServerConfigurationException(string message, Exception? inner = null)
    : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.Environment;
}
