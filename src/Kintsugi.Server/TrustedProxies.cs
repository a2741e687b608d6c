using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.HttpOverrides;

namespace Kintsugi.Server;

/// <summary>The server behind reverse proxies: which forwarded headers are believed, and from whom.</summary>
public static class TrustedProxies
{
    public static IPAddress Parse(string text) =>
        IPAddress.TryParse(text, out var address) ? address
            : throw new ServerConfigurationException($"--trusted-proxy '{text}' is not an IP address");

    /// <summary>
    /// X-Forwarded-For and X-Forwarded-Proto from these addresses only; the client is the address the nearest
    /// trusted proxy saw (a client cannot forge its way past the proxy by sending the header itself).
    /// </summary>
    public static ForwardedHeadersOptions Options(IReadOnlyList<IPAddress> proxies)
    {
        var options = new ForwardedHeadersOptions
        {
            ForwardedHeaders = ForwardedHeaders.XForwardedFor
            | ForwardedHeaders.XForwardedProto,
            ForwardLimit = 1
        };
        options.KnownProxies.Clear();
        foreach (var proxy in proxies) options.KnownProxies.Add(proxy.IsIPv4MappedToIPv6 ? proxy.MapToIPv4() : proxy);
        return options;
    }
}
