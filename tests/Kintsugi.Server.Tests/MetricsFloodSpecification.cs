using System.Text.RegularExpressions;

namespace Kintsugi.Server.Tests;

/// <summary>What anonymous clients can do to the server's metrics.</summary>
public sealed class MetricsFloodSpecification
{
    [Fact]
    public async Task Requests_with_made_up_method_names_do_not_grow_the_metrics()
    {
        await using var server = await TestServer.StartAsync();
        using var anonymous = server.Client();
        for (var i = 0; i < 40; i++)
            using (await anonymous.SendAsync(
                new HttpRequestMessage(new HttpMethod($"FLOOD{i}"), $"/api/v1/releases/x{i}"))) { }

        var metrics = await server.Admin.GetStringAsync("/metrics");

        var methods = Regex.Matches(metrics, "kintsugi_http_request_duration_seconds_count\\{method=\"([^\"]+)\"")
            .Select(m => m.Groups[1].Value).ToHashSet();
        Assert.DoesNotContain(methods, m => m.StartsWith("FLOOD", StringComparison.Ordinal));
        Assert.Contains("other", methods);
        Assert.InRange(Regex.Matches(metrics, "kintsugi_http_request_duration_seconds_count").Count, 1, 20);
    }
}
