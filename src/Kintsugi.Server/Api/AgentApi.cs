using System.Globalization;
using Kintsugi.Bundles;
using Kintsugi.Protocol;
using Kintsugi.Server.Fleet;
using Kintsugi.Server.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Kintsugi.Server.Api;

/// <summary>The agent side of docs/protocol.md: enroll, check-in, bundles, events.</summary>
public static class AgentApi
{
    public const string EnrollmentRateLimit = "enrollment";

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost(ProtocolPaths.Enroll, async (HttpContext context, Machines machines) =>
        {
            var request = await Http.ReadAsync(context, ProtocolJson.Default.EnrollRequest);
            var response = await machines.EnrollAsync(request, Http.Address(context));
            await Http.WriteProtocolAsync(context, response, ProtocolJson.Default.EnrollResponse,
                StatusCodes.Status201Created);
        }).RequireRateLimiting(EnrollmentRateLimit)
          .Body<EnrollRequest>("application/json").Produces<EnrollResponse>(StatusCodes.Status201Created)
          .DescribeAgent("Enroll a machine with an enrollment token (rate-limited per address: 429 with Retry-After)",
              AgentCredential.None);

        app.MapPost(ProtocolPaths.CheckIn, async (HttpContext context, Machines machines) =>
        {
            var machine = await MachineAsync(context, machines);
            var request = await Http.ReadAsync(context, ProtocolJson.Default.CheckInRequest);
            var response = await machines.CheckInAsync(machine, request, Http.Address(context), context.RequestAborted);
            await Http.WriteProtocolAsync(context, response, ProtocolJson.Default.CheckInResponse);
        }).Body<CheckInRequest>("application/json").Produces<CheckInResponse>()
          .DescribeAgent("Report state; learn what to run", AgentCredential.Machine);

        app.MapGet(ProtocolPaths.Events,
            async (HttpContext context, Machines machines, Epoch epoch, ServerOptions options) =>
        {
            await MachineAsync(context, machines);
            var text = Http.Query(context, "epoch");
            if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var seen))
                throw ApiProblem.BadRequest("the epoch query parameter must be a non-negative integer (the last " +
                    "epoch the agent saw)");
            long current;
            try
            {
                current = await epoch.WaitBeyondAsync(seen, TimeSpan.FromSeconds(options.EventsWaitSeconds),
                    context.RequestAborted);
            }
            catch (OperationCanceledException) { return; } // the agent went away, or the server is stopping
            context.Response.Headers.CacheControl = "no-store";
            await Http.WriteProtocolAsync(context, new EventsResponse(current), ProtocolJson.Default.EventsResponse);
        }).Produces<EventsResponse>()
          .Query("epoch", "the last epoch the agent saw", QueryValue.Integer, required: true)
          .DescribeAgent("Long-poll the revocation epoch: answers when the epoch exceeds it, or after " +
                         "eventsWaitSeconds", AgentCredential.Machine);

        app.MapGet(ProtocolPaths.BundlePrefix + "{digest}",
            async (HttpContext context, string digest, Machines machines, ApiTokens tokens, BundleStore store) =>
        {
            // A machine fetches what it was offered; an API token holder (export, inspection) may fetch too.
            if (await machines.AuthenticateAsync(Http.Bearer(context), context.RequestAborted) is null)
                await Http.RequireAsync(context, Role.Auditor);
            Sha256Digest sha;
            try { sha = Sha256Digest.Parse(digest); }
            catch (FormatException e) { throw ApiProblem.BadRequest(e.Message); }
            var path = await store.FindAsync(sha, context.RequestAborted)
                ?? throw ApiProblem.NotFound($"no bundle {sha}");
            var etag = $"\"{sha}\"";
            context.Response.Headers.CacheControl = "private, max-age=31536000, immutable";
            context.Response.Headers.ETag = etag;
            if (context.Request.Headers.IfNoneMatch.ToString() == etag)
            {
                context.Response.StatusCode = StatusCodes.Status304NotModified;
                return;
            }
            context.Response.ContentType = "application/octet-stream";
            context.Response.ContentLength = new FileInfo(path).Length;
            await context.Response.SendFileAsync(path, context.RequestAborted);
        }).Produces(StatusCodes.Status200OK, contentType: "application/octet-stream")
          .DescribeAgent("A bundle's bytes by SHA-256 (immutable)", AgentCredential.MachineOrAuditorToken);
    }

    private static async Task<MachineIdentity> MachineAsync(HttpContext context, Machines machines) =>
        await machines.AuthenticateAsync(Http.Bearer(context), context.RequestAborted)
        ?? throw ApiProblem.Unauthorized("the machine credential is unknown or was replaced by a re-enrollment; " +
            "enroll again");
}
