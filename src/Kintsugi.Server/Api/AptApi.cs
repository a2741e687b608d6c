using Kintsugi.Server.Apt;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;

namespace Kintsugi.Server.Api;

/// <summary>
/// The apt repository of the agent package: <c>GET /apt/...</c> for apt (no token: the package is public, its
/// integrity comes from the signed Release), <c>POST /api/v1/apt/packages</c> to add a .deb (operator, audited).
/// </summary>
public static class AptApi
{
    public const long MaxPackageLength = 256L * 1024 * 1024;

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/apt/{**path}", async (HttpContext context, string path, AptRepository apt) =>
        {
            if (apt.Resolve(path) is not { } file) throw ApiProblem.NotFound($"no {path} in the apt repository");
            context.Response.ContentType = path.EndsWith(".deb", StringComparison.Ordinal)
                ? "application/vnd.debian.binary-package"
                : path.EndsWith(".gz", StringComparison.Ordinal) ? "application/gzip" : "text/plain; charset=utf-8";
            await context.Response.SendFileAsync(file);
        });
        app.MapPost("/api/v1/apt/packages", async (HttpContext context, AptRepository apt, Storage.Database db) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
                limit.MaxRequestBodySize = MaxPackageLength;
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
            if (buffer.Length == 0) throw ApiProblem.BadRequest("the body is empty; send the .deb file as " +
                "application/octet-stream");
            string version;
            try { version = await apt.AddAsync(buffer.ToArray(), context.RequestAborted); }
            catch (AptPackageException e) { throw ApiProblem.BadRequest(e.Message); }
            await db.WriteAsync((c, t) =>
                Storage.AuditChain.AppendAsync(c, t, who.Actor, "apt.publish",
                $"apt:{AptRepository.PackageName}={version}"));
            return Http.Created(new AptPackageView(AptRepository.PackageName, version));
        }).Body<byte[]>("application/vnd.debian.binary-package", "application/octet-stream")
          .Describe("Add a kintsugi agent .deb to the server's apt repository (audited as apt.publish; only the " +
              "package " +
                    "named kintsugi is accepted; apt reads the repository under /apt/ without a token)", Role.Operator);
    }
}
