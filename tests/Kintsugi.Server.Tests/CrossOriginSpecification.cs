using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace Kintsugi.Server.Tests;

/// <summary>
/// The dashboard's cookie carries an API token, and a browser sends it with requests any site makes. A request
/// signed in by that cookie may change something only when it comes from the server's own pages (its Origin);
/// bearer-token clients are not browsers and are not asked.
/// </summary>
public sealed class CrossOriginSpecification
{
    private static HttpRequestMessage CookiePost(TestServer server, string path, HttpContent content, string? origin)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
        request.Headers.Add("Cookie", $"{Web.Dashboard.SessionCookie}={server.AdminToken}");
        if (origin is not null) request.Headers.Add("Origin", origin);
        return request;
    }

    private static async Task<int> ApiTokenCountAsync(TestServer server) =>
        (await server.GetJsonAsync("/api/v1/api-tokens")).GetArrayLength();

    [Fact]
    public async Task A_cross_origin_post_to_the_json_api_signed_in_by_the_cookie_is_refused_and_changes_nothing()
    {
        await using var server = await TestServer.StartAsync();
        using var browser = server.Client();
        var before = await ApiTokenCountAsync(server);
        HttpContent NewToken() => JsonContent.Create(new { role = "admin", name = "planted" });

        var crossSite =
            await browser.SendAsync(CookiePost(server, "/api/v1/api-tokens", NewToken(), "https://evil.example"));
        Assert.Equal(HttpStatusCode.Forbidden, crossSite.StatusCode);
        var problem = await crossSite.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Contains("Origin 'https://evil.example'", problem.GetProperty("detail").GetString());
        var opaque = await browser.SendAsync(CookiePost(server, "/api/v1/api-tokens", NewToken(), "null"));
        Assert.Equal(HttpStatusCode.Forbidden, opaque.StatusCode);
        var noOrigin = await browser.SendAsync(CookiePost(server, "/api/v1/api-tokens", NewToken(), null));
        Assert.Equal(HttpStatusCode.Forbidden, noOrigin.StatusCode);
        Assert.Equal(before, await ApiTokenCountAsync(server));

        var sameSite = await browser.SendAsync(CookiePost(server, "/api/v1/api-tokens", NewToken(),
            server.BaseAddress.GetLeftPart(UriPartial.Authority)));
        Assert.Equal(HttpStatusCode.Created, sameSite.StatusCode);
        Assert.Equal(before + 1, await ApiTokenCountAsync(server));
    }

    [Fact]
    public async Task A_cross_origin_dashboard_form_post_is_refused_and_the_release_stays_active()
    {
        await using var server = await TestServer.StartAsync();
        var id = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        using var browser = server.Client();
        var form = new FormUrlEncodedContent(new Dictionary<string, string> { ["reason"] = "planted" });

        var crossSite =
            await browser.SendAsync(CookiePost(server, $"/releases/{id}/revoke", form, "https://evil.example"));
        Assert.Equal(HttpStatusCode.Forbidden, crossSite.StatusCode);
        var release = await server.GetJsonAsync($"/api/v1/releases/{id}");
        Assert.False(release.TryGetProperty("revoked", out var revoked) && revoked.ValueKind != JsonValueKind.Null,
            release.ToString());
    }

    [Fact]
    public async Task Bearer_clients_and_cookie_reads_are_not_asked_for_an_origin()
    {
        await using var server = await TestServer.StartAsync();
        var withBearer = new HttpRequestMessage(HttpMethod.Post, "/api/v1/api-tokens")
        {
            Content = JsonContent.Create(new { role = "auditor", name = "script" }),
            Headers = { { "Origin", "https://elsewhere.example" } },
        };
        Assert.Equal(HttpStatusCode.Created, (await server.Admin.SendAsync(withBearer)).StatusCode);

        using var browser = server.Client();
        var read = new HttpRequestMessage(HttpMethod.Get, "/api/v1/machines");
        read.Headers.Add("Cookie", $"{Web.Dashboard.SessionCookie}={server.AdminToken}");
        Assert.Equal(HttpStatusCode.OK, (await browser.SendAsync(read)).StatusCode);
    }
}
