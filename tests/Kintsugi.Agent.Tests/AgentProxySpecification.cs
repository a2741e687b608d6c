using Kintsugi.Protocol;

namespace Kintsugi.Agent.Tests;

/// <summary>The agent's <c>proxy</c> setting: its requests to the server go through the configured proxy.</summary>
public sealed class AgentProxySpecification : IDisposable
{
    // The proxy: a real HTTP listener that answers requests addressed to any host, as a forward proxy does.
    private readonly FakeServer _proxy = new(anyHost: true);

    public void Dispose() => _proxy.Dispose();

    [Fact]
    public async Task Requests_to_the_server_go_through_the_configured_proxy()
    {
        _proxy.Handler = _ => new(201, new EnrollResponse("m_1", "kmc_secret", 3600, 30));
        // A server name that does not resolve: only the proxy can have carried the request.
        var config = AgentConfig.Parse($"server = http://patches.invalid:8443\ninsecure-http = yes\nproxy = " +
            $"{_proxy.Address}\ntoken = ket_x\n", "agent.conf");
        using var http = ServerClient.CreateHttpClient(config);
        var client = new ServerClient(http, config.Server!, "0.1.0");
        var kernel = new KernelIdentity(KernelRelease.Parse("6.1.0-56-cloud-amd64"),
            BuildId.Parse("3b43fad5034874490492495d552c0af6a5fab235"), "6.1.158-1");
        var response = await client.EnrollAsync(new EnrollRequest("ket_x", "web-1", "abc", kernel, "0.1.0"), default);
        Assert.Equal("kmc_secret", response.Credential);
        Assert.Equal(ProtocolPaths.Enroll, Assert.Single(_proxy.Requests).PathAndQuery);
    }

    [Theory]
    [InlineData("proxy = socks5://proxy:1080", "is not a proxy URL")]
    [InlineData("proxy = http://proxy:3128/some/path", "is not a proxy URL")]
    public void A_proxy_that_is_not_an_http_proxy_url_is_refused(string line, string message)
    {
        var error = Assert.Throws<AgentException>(() =>
            AgentConfig.Parse($"server = https://patches.example.net\n{line}\n", "agent.conf"));
        Assert.Contains(message, error.Message);
    }

    [Fact]
    public void A_proxy_makes_no_sense_offline()
    {
        var error = Assert.Throws<AgentException>(() =>
            AgentConfig.Parse("offline-directory = /srv/b\nproxy = http://proxy:3128\n", "agent.conf"));
        Assert.Contains("proxy only makes sense with server", error.Message);
    }
}
