using System.Globalization;
using Kintsugi.Bundles;
using Kintsugi.Server.Fleet;
using Kintsugi.Server.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Kintsugi.Server.Api;

public sealed record ServerInfo(string Version, string Database, long Epoch, int CheckInSeconds, int EventsWaitSeconds, IReadOnlyList<ChannelView> Channels, string Role, string Actor);

/// <summary>The operator API (docs/server.md, openapi.json): releases, channels, machines, tokens, keys, audit.</summary>
public static class OperatorApi
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/v1");

        api.MapGet("/server", async (HttpContext context, Database db, Epoch epoch, Releases releases, ServerOptions options) =>
        {
            var who = await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, new ServerInfo(ServerApp.Version, db.Description, epoch.Current, options.CheckInSeconds, options.EventsWaitSeconds,
                await releases.ChannelsAsync(), who.Role.ToWire(), who.Actor.Name));
        });

        // ---- releases ----
        api.MapGet("/releases", async (HttpContext context, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            var build = context.Request.Query["build"].ToString();
            if (build.Length > 0 && !BuildId.TryParse(build, out _)) throw ApiProblem.BadRequest($"'{build}' is not a build-id");
            await Http.WriteAsync(context, await releases.ListAsync(build.Length == 0 ? null : build.ToLowerInvariant()));
        });
        api.MapGet("/releases/{id}", async (HttpContext context, string id, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, await releases.GetAsync(id));
        });
        api.MapPost("/releases", async (HttpContext context, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var bytes = await ReadBundleAsync(context);
            var result = await releases.PublishAsync(bytes, who.Actor);
            await Http.WriteAsync(context, result, result.Created ? StatusCodes.Status201Created : StatusCodes.Status200OK);
        });
        api.MapPost("/releases/{id}/promote", async (HttpContext context, string id, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var request = context.Request.ContentLength is 0 or null && !context.Request.Headers.ContainsKey("Transfer-Encoding")
                ? new PromoteRequest(null, null) : await Http.ReadAsync<PromoteRequest>(context);
            await Http.WriteAsync(context, await releases.PromoteAsync(id, request, who.Actor));
        });
        api.MapPost("/releases/{id}/revoke", async (HttpContext context, string id, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            await Http.WriteAsync(context, await releases.RevokeAsync(id, await Http.ReadAsync<RevokeRequest>(context), who.Actor));
        });

        // ---- signed release metadata ----
        api.MapPost("/metadata", async (HttpContext context, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var request = await Http.ReadAsync<ReleaseMetadataRequest>(context);
            var (view, created) = await releases.PublishMetadataAsync(request.Metadata, who.Actor);
            await Http.WriteAsync(context, view, created ? StatusCodes.Status201Created : StatusCodes.Status200OK);
        });
        api.MapGet("/metadata/{build}", async (HttpContext context, string build, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, await releases.MetadataAsync(build));
        });
        api.MapPost("/trust-root", async (HttpContext context, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            var request = await Http.ReadAsync<TrustRootRequest>(context);
            var (view, created) = await releases.PublishTrustRootAsync(request.Document, who.Actor);
            await Http.WriteAsync(context, view, created ? StatusCodes.Status201Created : StatusCodes.Status200OK);
        });
        api.MapGet("/trust-root", async (HttpContext context, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, await releases.TrustRootAsync());
        });
        api.MapGet("/timestamp-key", async (HttpContext context, ReleaseTimestamps timestamps) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, new TimestampKeyView(timestamps.PublicKey.Id.ToString(), timestamps.PublicKey.ExportPem()));
        });

        // ---- channels ----
        api.MapGet("/channels", async (HttpContext context, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, await releases.ChannelsAsync());
        });
        api.MapPut("/channels/{name}", async (HttpContext context, string name, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            await Http.WriteAsync(context, await releases.PutChannelAsync(name, await Http.ReadAsync<ChannelRequest>(context), who.Actor));
        });

        // ---- machines ----
        api.MapGet("/machines", async (HttpContext context, Machines machines) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            string? Query(string name) => context.Request.Query[name].ToString() is { Length: > 0 } v ? v : null;
            var channel = Query("channel");
            if (channel is not null) Validation.ChannelName(channel);
            var state = Query("state");
            if (state is not null && !PatchStates.All.Contains(state)) throw ApiProblem.BadRequest($"state '{state}' is not one of {string.Join(", ", PatchStates.All)}");
            var build = Query("build");
            if (build is not null && !BuildId.TryParse(build, out _)) throw ApiProblem.BadRequest($"'{build}' is not a build-id");
            await Http.WriteAsync(context, await machines.ListAsync(channel, state, build?.ToLowerInvariant()));
        });
        api.MapGet("/machines/{id}", async (HttpContext context, string id, Machines machines) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, await machines.GetAsync(id));
        });
        api.MapPost("/machines/{id}/move", async (HttpContext context, string id, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            await Http.WriteAsync(context, await machines.MoveAsync(id, (await Http.ReadAsync<MoveMachineRequest>(context)).Channel, who.Actor));
        });
        api.MapPost("/machines/{id}/approve-reenroll", async (HttpContext context, string id, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            await Http.WriteAsync(context, await machines.ApproveReenrollAsync(id, who.Actor));
        });
        api.MapDelete("/machines/{id}", async (HttpContext context, string id, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            await machines.DeleteAsync(id, who.Actor);
            context.Response.StatusCode = StatusCodes.Status204NoContent;
        });

        // ---- enrollment tokens ----
        api.MapGet("/enrollment-tokens", async (HttpContext context, Machines machines) =>
        {
            await Http.RequireAsync(context, Role.Operator);
            await Http.WriteAsync(context, await machines.EnrollmentTokensAsync());
        });
        api.MapPost("/enrollment-tokens", async (HttpContext context, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            await Http.WriteAsync(context, await machines.CreateEnrollmentTokenAsync(await Http.ReadAsync<EnrollmentTokenRequest>(context), who.Actor), StatusCodes.Status201Created);
        });
        api.MapDelete("/enrollment-tokens/{id}", async (HttpContext context, string id, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            await machines.RevokeEnrollmentTokenAsync(id, who.Actor);
            context.Response.StatusCode = StatusCodes.Status204NoContent;
        });

        // ---- API tokens ----
        api.MapGet("/api-tokens", async (HttpContext context, ApiTokens tokens) =>
        {
            await Http.RequireAsync(context, Role.Admin);
            await Http.WriteAsync(context, await tokens.ListAsync());
        });
        api.MapPost("/api-tokens", async (HttpContext context, ApiTokens tokens) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            await Http.WriteAsync(context, await tokens.CreateAsync(await Http.ReadAsync<ApiTokenRequest>(context), who.Actor), StatusCodes.Status201Created);
        });
        api.MapDelete("/api-tokens/{id}", async (HttpContext context, string id, ApiTokens tokens) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            await tokens.RevokeAsync(id, who.Actor);
            context.Response.StatusCode = StatusCodes.Status204NoContent;
        });

        // ---- publisher keys ----
        api.MapGet("/keys", async (HttpContext context, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, await releases.KeysAsync());
        });
        api.MapPost("/keys", async (HttpContext context, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            await Http.WriteAsync(context, await releases.AddKeyAsync((await Http.ReadAsync<PublisherKeyRequest>(context)).Pem, who.Actor), StatusCodes.Status201Created);
        });
        api.MapPost("/keys/{id}/retire", async (HttpContext context, string id, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            await releases.RetireKeyAsync(id, who.Actor);
            context.Response.StatusCode = StatusCodes.Status204NoContent;
        });

        // ---- audit ----
        api.MapGet("/audit", async (HttpContext context, Database db) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            var after = ParseLong(context, "after", 0, 0, long.MaxValue);
            var limit = (int)ParseLong(context, "limit", 1000, 1, 10_000);
            await Http.WriteAsync(context, await AuditChain.ReadAsync(db, after, limit, context.RequestAborted));
        });
        api.MapGet("/audit/verify", async (HttpContext context, Database db) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            await Http.WriteAsync(context, await AuditChain.VerifyAsync(db, context.RequestAborted));
        });
    }

    internal static long ParseLong(HttpContext context, string name, long fallback, long min, long max)
    {
        var text = context.Request.Query[name].ToString();
        if (text.Length == 0) return fallback;
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value < min || value > max)
            throw ApiProblem.BadRequest($"{name} must be an integer from {min} to {max}");
        return value;
    }

    /// <summary>Reads an uploaded bundle (application/octet-stream), refusing anything above the format's size limit.</summary>
    internal static async Task<byte[]> ReadBundleAsync(HttpContext context)
    {
        if (context.Request.ContentLength is > Bundle.MaxLength) throw new ApiProblem(413, "request too large", $"a bundle is at most {Bundle.MaxLength} bytes");
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await context.Request.Body.ReadAsync(chunk, context.RequestAborted)) > 0)
        {
            buffer.Write(chunk, 0, read);
            if (buffer.Length > Bundle.MaxLength) throw new ApiProblem(413, "request too large", $"a bundle is at most {Bundle.MaxLength} bytes");
        }
        if (buffer.Length == 0) throw ApiProblem.BadRequest("the body is empty; send the bundle file as application/octet-stream");
        return buffer.ToArray();
    }
}
