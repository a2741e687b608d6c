using Kintsugi.Server.Fleet;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Kintsugi.Server.Api;

/// <summary>GET /api/v1/reports/openvex: the fleet's OpenVEX document (auditor).</summary>
public static class OpenVexApi
{
    public const string MediaType = "application/vnd.openvex+json";

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/api/v1/reports/openvex", async (HttpContext context, Reports reports) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            var document = await reports.OpenVexAsync($"Kintsugi patch server at {context.Request.Host}");
            context.Response.ContentType = MediaType;
            await context.Response.WriteAsync(document.ToJson() + "\n");
        }).Produces(StatusCodes.Status200OK, contentType: MediaType)
          .Describe("The fleet as an OpenVEX v0.2.0 document (docs/server.md)", Role.Auditor);
}
