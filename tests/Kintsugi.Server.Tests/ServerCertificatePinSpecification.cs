using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>
/// The operator CLI's <c>--ca</c> against a running server: it trusts only the certificate given (or what that
/// certificate issued), never the system's CAs, and the certificate must name the host connected to.
/// </summary>
public sealed class ServerCertificatePinSpecification
{
    [Fact]
    public async Task The_cli_refuses_a_certificate_the_system_trusts_when_another_is_pinned()
    {
        using var directory = new TemporaryDirectory();
        // A CA the CLI's system store trusts (SSL_CERT_FILE is OpenSSL's system store), as a public CA would be.
        using var publicCaKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Public test CA", publicCaKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        var now = DateTimeOffset.UtcNow;
        using var publicCa = caRequest.CreateSelfSigned(now.AddMinutes(-5), now.AddDays(1));
        var systemStore = directory.File("system-cas.pem");
        await File.WriteAllTextAsync(systemStore, publicCa.ExportCertificatePem() + "\n");
        using var serverKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var leafRequest = new CertificateRequest("CN=127.0.0.1", serverKey, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        leafRequest.CertificateExtensions.Add(names.Build());
        leafRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var leaf = leafRequest.Create(publicCa, now.AddMinutes(-5), now.AddDays(1), [1, 2, 3, 4]);
        var certificateFile = directory.File("server.crt");
        var keyFile = directory.File("server.key");
        await File.WriteAllTextAsync(certificateFile, leaf.ExportCertificatePem() + "\n");
        await File.WriteAllTextAsync(keyFile, serverKey.ExportPkcs8PrivateKeyPem() + "\n");
        // The certificate the operator pinned: another server's.
        using var otherKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var other = new CertificateRequest("CN=127.0.0.1", otherKey, HashAlgorithmName.SHA256)
            .CreateSelfSigned(now.AddMinutes(-5), now.AddDays(1));
        var pinned = directory.File("pinned.crt");
        await File.WriteAllTextAsync(pinned, other.ExportCertificatePem() + "\n");

        await using var server = await ServerProcess.StartAsync(host: "127.0.0.1",
            extra: ["--tls-cert", certificateFile, "--tls-key", keyFile]);
        var environment = new Dictionary<string, string> { ["SSL_CERT_FILE"] = systemStore };

        var withoutPin = Cli(server.Url, null, server.AdminToken, environment, "machines");
        Assert.True(withoutPin.Code == 0, $"the system store does trust the server: {withoutPin.Out}");
        var refused = Cli(server.Url, pinned, server.AdminToken, environment, "machines");
        Assert.True(refused.Code == 5, refused.Out);
        Assert.Contains("neither the pinned one nor issued by it", refused.Out);
        var issuer = Cli(server.Url, systemStore, server.AdminToken, [], "machines");
        Assert.True(issuer.Code == 0, $"the CA that issued the server's certificate is trusted: {issuer.Out}");
    }

    [Fact]
    public async Task The_cli_refuses_the_pinned_certificate_presented_for_another_host_name()
    {
        await using var server = await ServerProcess.StartAsync(host: "0.0.0.0");
        var pinned = Path.Combine(server.DataDirectory, "tls", "server.crt");
        // 127.0.0.2 reaches the same listener, but the generated certificate does not name it.
        var elsewhere = $"https://127.0.0.2:{server.Port}";

        var refused = Cli(elsewhere, pinned, server.AdminToken, [], "machines");
        Assert.True(refused.Code == 5, refused.Out);
        Assert.Contains("does not name the host", refused.Out);
        var named = Cli(server.Url, pinned, server.AdminToken, [], "machines");
        Assert.True(named.Code == 0, named.Out);
    }

    [Fact]
    public async Task The_agent_refuses_its_pinned_server_certificate_presented_for_another_host_name()
    {
        await using var server = await ServerProcess.StartAsync(host: "0.0.0.0");
        var pinned = Path.Combine(server.DataDirectory, "tls", "server.crt");
        HttpClient Agent(string url) =>
            Kintsugi.Agent.ServerClient.CreateHttpClient(
            new Kintsugi.Agent.AgentConfig { Server = new Uri(url), ServerCertificate = pinned });

        using var elsewhere = Agent($"https://127.0.0.2:{server.Port}");
        var refused = await Assert.ThrowsAsync<HttpRequestException>(() =>
            elsewhere.GetAsync($"https://127.0.0.2:{server.Port}/healthz"));
        Assert.IsType<System.Security.Authentication.AuthenticationException>(refused.InnerException);
        using var named = Agent(server.Url);
        Assert.NotNull(await named.GetAsync(server.Url + "/healthz"));
    }

    private static (int Code, string Out) Cli(string url, string? ca, string token,
        Dictionary<string, string> environment, params string[] args) =>
        OperatorCli.Run(url, token, ca, args, environment);
}
