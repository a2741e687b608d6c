using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace Kintsugi.Server.Tests;

/// <summary>Behind a reverse proxy: the audit log and the rate limits see the real client when, and only when, the
/// proxy is trusted.</summary>
public sealed class TrustedProxySpecification
{
    private static async Task<string?> AuditedAddressOfATokenCreatedFrom(TestServer server, string forwardedFor)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post,
            "/api/v1/enrollment-tokens")
        { Content = JsonContent.Create(new { channel = "canary" }) };
        request.Headers.Add("X-Forwarded-For", forwardedFor);
        Assert.Equal(HttpStatusCode.Created, (await server.Admin.SendAsync(request)).StatusCode);
        var events = await server.GetJsonAsync("/api/v1/audit");
        return events.EnumerateArray().Last().GetProperty("address").GetString();
    }

    [Fact]
    public async Task A_trusted_proxys_forwarded_for_is_the_audited_client_address()
    {
        await using var server =
            await TestServer.StartAsync(configure: o => o with { TrustedProxies = [IPAddress.Loopback] });
        Assert.Equal("203.0.113.7", await AuditedAddressOfATokenCreatedFrom(server, "203.0.113.7"));
    }

    [Fact]
    public async Task Without_a_trusted_proxy_the_forwarded_for_header_is_ignored()
    {
        await using var server = await TestServer.StartAsync();
        Assert.Equal("127.0.0.1", await AuditedAddressOfATokenCreatedFrom(server, "203.0.113.7"));
    }

    [Fact]
    public async Task Behind_a_trusted_proxy_each_forwarded_client_has_its_own_enrollment_rate_limit()
    {
        await using var server = await TestServer.StartAsync(configure: o =>
            o with { TrustedProxies = [IPAddress.Loopback], EnrollmentsPerMinute = 2 });
        var token = await server.EnrollmentTokenAsync();
        var machines = 0;
        async Task<HttpStatusCode> EnrollFrom(string client)
        {
            var agent = new SimulatedAgent(server, Kernels.Debian61, $"m{machines++}");
            agent.Http.DefaultRequestHeaders.Add("X-Forwarded-For", client);
            return (await agent.TryEnrollAsync(token)).StatusCode;
        }

        Assert.Equal(HttpStatusCode.Created, await EnrollFrom("203.0.113.7"));
        Assert.Equal(HttpStatusCode.Created, await EnrollFrom("203.0.113.7"));
        Assert.Equal(HttpStatusCode.TooManyRequests, await EnrollFrom("203.0.113.7"));
        // Another machine behind the same proxy is not held back by the first one's limit.
        Assert.Equal(HttpStatusCode.Created, await EnrollFrom("203.0.113.8"));
    }
}
