using System.Globalization;
using Kintsugi.Bundles;
using Kintsugi.Server.Fleet;
using Kintsugi.Server.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;

namespace Kintsugi.Server.Api;

/// <summary>
/// The operator API (docs/server.md): releases, channels, machines, tokens, keys, audit. Each endpoint returns its
/// reply type (Kintsugi.Protocol.Operator), so the framework writes it with <see cref="Http.Json"/> and the OpenAPI
/// document at /api/v1/openapi.json describes it.
/// </summary>
public static class OperatorApi
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/v1");

        api.MapGet("/server",
            async (HttpContext context, Database db, Epoch epoch, Releases releases, ServerOptions options) =>
        {
            var who = await Http.RequireAsync(context, Role.Auditor);
            return new ServerInfo(ServerApp.Version, db.Description, epoch.Current, options.CheckInSeconds,
                options.EventsWaitSeconds, await releases.ChannelsAsync(), who.Role.ToWire(), who.Actor.Name);
        }).Describe("Server version, database, epoch, channels, and who you are", Role.Auditor);

        // ---- releases ----
        api.MapGet("/releases", async (HttpContext context, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            var build = Http.Query(context, "build");
            if (build.Length > 0
                && !BuildId.TryParse(build, out _)) throw ApiProblem.BadRequest($"'{build}' is not a build-id");
            return await releases.ListAsync(build.Length == 0 ? null : build.ToLowerInvariant());
        }).Query("build", "only the releases for this build-id (hex; a kernel's or a user-space object's)")
          .Describe("List releases", Role.Auditor);
        api.MapGet("/releases/{id}", async (HttpContext context, string id, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return await releases.GetAsync(id);
        }).Describe("One release (id r_… or bundle sha256)", Role.Auditor);
        api.MapPost("/releases",
            async Task<Results<Created<PublishResult>, Ok<PublishResult>>> (HttpContext context, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var bytes = await ReadBundleAsync(context);
            var result = await releases.PublishAsync(bytes, who.Actor);
            return result.Created ? Http.Created(result) : TypedResults.Ok(result);
        }).Body<byte[]>("application/octet-stream")
          .Describe("Publish a signed bundle (verified against the trusted publisher keys; lands in the first channel)",
              Role.Operator);
        api.MapPost("/releases/{id}/promote", async (HttpContext context, string id, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var request = context.Request.ContentLength is 0 or null
                && !context.Request.Headers.ContainsKey("Transfer-Encoding")
                ? new PromoteRequest(null, null) : await Http.ReadAsync(context, OperatorJson.Default.PromoteRequest);
            return await releases.PromoteAsync(id, request, who.Actor);
        }).Body<PromoteRequest>(optional: true, "application/json")
          .Describe("Promote manually to a channel (default: the next)", Role.Operator);
        api.MapPost("/releases/{id}/revoke", async (HttpContext context, string id, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            return await releases.RevokeAsync(id, await Http.ReadAsync(context, OperatorJson.Default.RevokeRequest),
                who.Actor);
        }).Body<RevokeRequest>("application/json")
          .Describe("Revoke fleet-wide; the epoch moves so agents react at once", Role.Operator);

        // ---- signed release metadata ----
        api.MapPost("/metadata",
            async Task<Results<Created<ReleaseMetadataView>, Ok<ReleaseMetadataView>>> (HttpContext context,
            Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var request = await Http.ReadAsync(context, OperatorJson.Default.ReleaseMetadataRequest);
            var (view, created) = await releases.PublishMetadataAsync(request.Metadata, who.Actor);
            return created ? Http.Created(view) : TypedResults.Ok(view);
        }).Body<ReleaseMetadataRequest>("application/json")
          .Describe("Store the publisher's signed release metadata for a build (a higher version); " +
                    "releases it revokes are revoked, the epoch moves", Role.Operator);
        api.MapGet("/metadata/{build}", async (HttpContext context, string build, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return await releases.MetadataAsync(build);
        }).Describe("The newest signed release metadata of a build", Role.Auditor);
        api.MapPost("/trust-root", async Task<Results<Created<TrustRootView>,
            Ok<TrustRootView>>> (HttpContext context, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            var request = await Http.ReadAsync(context, OperatorJson.Default.TrustRootRequest);
            var (view, created) = await releases.PublishTrustRootAsync(request.Document, who.Actor);
            return created ? Http.Created(view) : TypedResults.Ok(view);
        }).Body<TrustRootRequest>("application/json")
          .Describe("Store a trust-root update signed by an offline root key (a higher version) for every agent's " +
          "next check-in; " +
                    "the keys it retires are retired here, the keys it trusts are trusted, the epoch moves",
                    Role.Admin);
        api.MapGet("/trust-root", async (HttpContext context, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return await releases.TrustRootAsync();
        }).Describe("The trust-root update the server carries to agents (404 when none was published)", Role.Auditor);
        api.MapGet("/timestamp-key", async (HttpContext context, ReleaseTimestamps timestamps) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return new TimestampKeyView(timestamps.PublicKey.Id.ToString(), timestamps.PublicKey.ExportPem());
        }).Describe("The server's online timestamp public key (PEM), for agents' trust stores", Role.Auditor);

        // ---- channels ----
        api.MapGet("/channels", async (HttpContext context, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return await releases.ChannelsAsync();
        }).Describe("Channels in order", Role.Auditor);
        api.MapPut("/channels/{name}", async (HttpContext context, string name, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            return await releases.PutChannelAsync(name,
                await Http.ReadAsync(context, OperatorJson.Default.ChannelRequest), who.Actor);
        }).Body<ChannelRequest>("application/json")
          .Describe("Create a channel at the end, or set its promotion policy", Role.Admin);

        // ---- machines ----
        api.MapGet("/machines", async (HttpContext context, Machines machines) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            string? Query(string name) => Http.Query(context, name) is { Length: > 0 } v ? v : null;
            var channel = Query("channel");
            if (channel is not null) Validation.ChannelName(channel);
            var state = Query("state");
            if (state is not null && !PatchStates.All.Contains(state))
                throw ApiProblem.BadRequest($"state '{state}' is not one of {string.Join(", ", PatchStates.All)}");
            var build = Query("build");
            if (build is not null
                && !BuildId.TryParse(build, out _)) throw ApiProblem.BadRequest($"'{build}' is not a build-id");
            return await machines.ListAsync(channel, state, build?.ToLowerInvariant());
        }).Query("channel", "only the machines in this channel")
          .Query("state", "only the machines that reported this patch state", values: [.. PatchStates.All])
          .Query("build", "only the machines running this kernel build-id (hex)")
          .Describe("Machine inventory", Role.Auditor);
        api.MapGet("/machines/{id}", async (HttpContext context, string id, Machines machines) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return await machines.GetAsync(id);
        }).Describe("One machine", Role.Auditor);
        api.MapPost("/machines/{id}/move", async (HttpContext context, string id, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var request = await Http.ReadAsync(context, OperatorJson.Default.MoveMachineRequest);
            return await machines.MoveAsync(id, request.Channel, who.Actor);
        }).Body<MoveMachineRequest>("application/json")
          .Describe("Move a machine to another channel", Role.Operator);
        api.MapPost("/machines/{id}/approve-reenroll", async (HttpContext context, string id, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            return await machines.ApproveReenrollAsync(id, who.Actor);
        }).Describe("Let this machine's machine-id enroll again without its current credential (a re-imaged " +
            "machine), once within 24 hours", Role.Operator);
        api.MapDelete("/machines/{id}", async (HttpContext context, string id, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            await machines.DeleteAsync(id, who.Actor);
            return TypedResults.NoContent();
        }).Describe("Forget a machine (its credential stops working)", Role.Operator);

        // ---- enrollment tokens ----
        api.MapGet("/enrollment-tokens", async (HttpContext context, Machines machines) =>
        {
            await Http.RequireAsync(context, Role.Operator);
            return await machines.EnrollmentTokensAsync();
        }).Describe("Enrollment tokens (never their secrets)", Role.Operator);
        api.MapPost("/enrollment-tokens", async (HttpContext context, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var request = await Http.ReadAsync(context, OperatorJson.Default.EnrollmentTokenRequest);
            return Http.Created(await machines.CreateEnrollmentTokenAsync(request, who.Actor));
        }).Body<EnrollmentTokenRequest>("application/json")
          .Describe("Make an enrollment token bound to a channel", Role.Operator);
        api.MapDelete("/enrollment-tokens/{id}", async (HttpContext context, string id, Machines machines) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            await machines.RevokeEnrollmentTokenAsync(id, who.Actor);
            return TypedResults.NoContent();
        }).Describe("Revoke an enrollment token", Role.Operator);

        // ---- API tokens ----
        api.MapGet("/api-tokens", async (HttpContext context, ApiTokens tokens) =>
        {
            await Http.RequireAsync(context, Role.Admin);
            return await tokens.ListAsync();
        }).Describe("API tokens (never their secrets)", Role.Admin);
        api.MapPost("/api-tokens", async (HttpContext context, ApiTokens tokens) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            return Http.Created(await tokens.CreateAsync(await Http.ReadAsync(context,
                OperatorJson.Default.ApiTokenRequest), who.Actor));
        }).Body<ApiTokenRequest>("application/json")
          .Describe("Make an API token with a role", Role.Admin);
        api.MapDelete("/api-tokens/{id}", async (HttpContext context, string id, ApiTokens tokens) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            await tokens.RevokeAsync(id, who.Actor);
            return TypedResults.NoContent();
        }).Describe("Revoke an API token", Role.Admin);

        // ---- publisher keys ----
        api.MapGet("/keys", async (HttpContext context, Releases releases) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return await releases.KeysAsync();
        }).Describe("Trusted and retired publisher keys", Role.Auditor);
        api.MapPost("/keys", async (HttpContext context, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            var request = await Http.ReadAsync(context, OperatorJson.Default.PublisherKeyRequest);
            return Http.Created(await releases.AddKeyAsync(request.Pem, who.Actor));
        }).Body<PublisherKeyRequest>("application/json")
          .Describe("Trust a publisher public key (PEM)", Role.Admin);
        api.MapPost("/keys/{id}/retire", async (HttpContext context, string id, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Admin);
            await releases.RetireKeyAsync(id, who.Actor);
            return TypedResults.NoContent();
        }).Describe("Retire a publisher key (one-way)", Role.Admin);

        // ---- audit ----
        api.MapGet("/audit", async (HttpContext context, Database db) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            var after = ParseLong(context, "after", 0, 0, long.MaxValue);
            var limit = (int)ParseLong(context, "limit", 1000, 1, 10_000);
            return await AuditChain.ReadAsync(db, after, limit, context.RequestAborted);
        }).Query("after", "the sequence number after which to start (default: 0, the beginning)", QueryValue.Integer)
          .Query("limit", "at most this many events, 1 to 10000 (default: 1000)", QueryValue.Integer)
          .Describe("Audit events in order", Role.Auditor);
        api.MapGet("/audit/verify", async (HttpContext context, Database db) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return await AuditChain.VerifyAsync(db, context.RequestAborted);
        }).Describe("Verify the audit hash chain", Role.Auditor);
    }

    internal static long ParseLong(HttpContext context, string name, long fallback, long min, long max)
    {
        var text = Http.Query(context, name);
        if (text.Length == 0) return fallback;
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value < min
            || value > max)
            throw ApiProblem.BadRequest($"{name} must be an integer from {min} to {max}");
        return value;
    }

    /// <summary>Reads an uploaded bundle (application/octet-stream), refusing anything above the format's size
    /// limit.</summary>
    internal static async Task<byte[]> ReadBundleAsync(HttpContext context)
    {
        if (context.Request.ContentLength is > Bundle.MaxLength) throw new ApiProblem(413, "request too large",
            $"a bundle is at most {Bundle.MaxLength} bytes");
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await context.Request.Body.ReadAsync(chunk, context.RequestAborted)) > 0)
        {
            buffer.Write(chunk, 0, read);
            if (buffer.Length > Bundle.MaxLength) throw new ApiProblem(413, "request too large",
                $"a bundle is at most {Bundle.MaxLength} bytes");
        }
        if (buffer.Length == 0) throw ApiProblem.BadRequest("the body is empty; send the bundle file as " +
            "application/octet-stream");
        return buffer.ToArray();
    }
}
