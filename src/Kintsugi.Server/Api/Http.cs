using System.Text.Json;
using System.Diagnostics;
using System.Text.Json.Serialization.Metadata;
using Kintsugi.Protocol;
using Kintsugi.Server.Fleet;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.DependencyInjection;

namespace Kintsugi.Server.Api;

/// <summary>Request plumbing shared by the API: JSON in and out, problem documents, authentication.</summary>
public static class Http
{
    /// <summary>The operator API's JSON (source-generated, shared with the CLI): see <see
    /// cref="OperatorJson"/>.</summary>
    public static JsonSerializerOptions Json => OperatorJson.Default.Options;

    /// <summary>
    /// Makes the JSON that minimal-API endpoints write for returned values, and that the OpenAPI document describes,
    /// the operator API's own (<see cref="Json"/>); the agent protocol's types are known for their schemas.
    /// </summary>
    public static void ConfigureJson(JsonSerializerOptions options)
    {
        options.WriteIndented = Json.WriteIndented;
        options.PropertyNamingPolicy = Json.PropertyNamingPolicy;
        options.DefaultIgnoreCondition = Json.DefaultIgnoreCondition;
        options.RespectNullableAnnotations = Json.RespectNullableAnnotations;
        options.RespectRequiredConstructorParameters = Json.RespectRequiredConstructorParameters;
        options.TypeInfoResolverChain.Insert(0, OperatorJson.Default);
        options.TypeInfoResolverChain.Insert(1, ProtocolJson.Default);
    }

    /// <summary>The one place a fleet refusal becomes an HTTP status and problem title.</summary>
    public static (int Status, string Title) Problem(FleetRefusal refusal) => refusal switch
    {
        FleetRefusal.Invalid => (StatusCodes.Status400BadRequest, "invalid request"),
        FleetRefusal.NotAuthenticated => (StatusCodes.Status401Unauthorized, "not authenticated"),
        FleetRefusal.NotFound => (StatusCodes.Status404NotFound, "not found"),
        FleetRefusal.Conflict => (StatusCodes.Status409Conflict, "conflict"),
        FleetRefusal.Unverified => (StatusCodes.Status422UnprocessableEntity, "refused"),
        _ => throw new UnreachableException($"no HTTP status for {refusal}"),
    };

    public const int MaxJsonBody = 64 * 1024;

    public static string? Address(HttpContext context) => context.Connection.RemoteIpAddress?.ToString();

    public static string? Bearer(HttpContext context)
    {
        var header = context.Request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.Ordinal) ? header[7..].Trim() : null;
    }

    /// <summary>
    /// A query parameter's text ("" when absent). The endpoint must declare it (<see cref="ApiDocument.Query"/>):
    /// reading an undeclared one is a bug, so that the OpenAPI document lists every parameter the API reads.
    /// </summary>
    public static string Query(HttpContext context, string name)
    {
        if (context.GetEndpoint()?.Metadata.OfType<QueryParameter>().Any(p => p.Name == name) != true)
            throw new UnreachableException($"the endpoint {context.GetEndpoint()?.DisplayName} reads the query " +
                $"parameter '{name}' without declaring it (ApiDocument.Query)");
        return context.Request.Query[name].ToString();
    }

    public static async Task<T> ReadAsync<T>(HttpContext context, JsonTypeInfo<T> type)
    {
        if (context.Request.ContentLength is > MaxJsonBody) throw new ApiProblem(413, "request too large",
            $"the body is larger than {MaxJsonBody} bytes");
        if (context.Request.ContentType is { } contentType
            && !contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
            throw new ApiProblem(415, "unsupported media type", "send application/json");
        using var limited = new MemoryStream();
        var buffer = new byte[8192];
        int read;
        while ((read = await context.Request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
        {
            limited.Write(buffer, 0, read);
            if (limited.Length > MaxJsonBody) throw new ApiProblem(413, "request too large",
                $"the body is larger than {MaxJsonBody} bytes");
        }
        try
        {
            return JsonSerializer.Deserialize(limited.GetBuffer().AsSpan(0, (int)limited.Length), type)
                ?? throw ApiProblem.BadRequest("the body is JSON null");
        }
        catch (JsonException e)
        {
            var cause = e.InnerException is FormatException f ? $" ({f.Message})" : "";
            throw ApiProblem.BadRequest($"the body is not a valid request: {e.Message}{cause}");
        }
        catch (Exception e)
            when (e is FormatException or ArgumentException or InvalidOperationException or OverflowException)
        {
            // The shared types parse at the edge (build-ids, states, digests) and say what is wrong.
            throw ApiProblem.BadRequest($"the body is not a valid request: {e.Message}");
        }
    }

    /// <summary>A 201 reply with <paramref name="value"/> (the created thing has no URL of its own to name).</summary>
    public static Created<T> Created<T>(T value) => TypedResults.Created((string?)null, value);

    public static Task WriteProtocolAsync<T>(HttpContext context, T value, JsonTypeInfo<T> type, int status = 200)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json; charset=utf-8";
        return JsonSerializer.SerializeAsync(context.Response.Body, value, type, context.RequestAborted);
    }

    public static Task WriteProblemAsync(HttpContext context, int status, string title, string detail)
    {
        if (context.Response.HasStarted) return Task.CompletedTask;
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/problem+json; charset=utf-8";
        var problem = new ProblemDocument($"https://kintsugi.dev/problems/{status}", title, status, detail);
        return JsonSerializer.SerializeAsync(context.Response.Body, problem, ProtocolJson.Default.ProblemDocument);
    }

    /// <summary>
    /// Refuses a browser request from another site: its <c>Origin</c> must be this server's own (a browser always
    /// sends it with a POST; the SameSite cookie is the first guard, this the second).
    /// </summary>
    public static void RequireSameOrigin(HttpContext context)
    {
        var origin = context.Request.Headers.Origin.ToString();
        if (!Uri.TryCreate(origin, UriKind.Absolute, out var uri)
            || !string.Equals(uri.Authority, context.Request.Host.Value, StringComparison.OrdinalIgnoreCase))
            throw ApiProblem.Forbidden(
                "a request signed in by the dashboard's cookie that changes anything must come " +
                "from the dashboard's own pages (Origin " + (origin.Length == 0 ? "missing" : $"'{origin}'") +
                "); API clients send Authorization: Bearer kat_…");
    }

    private static bool IsSafe(string method) =>
        HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method);

    /// <summary>The API-token holder, who must have at least <paramref name="role"/>; else 401 or 403.</summary>
    public static async Task<Principal> RequireAsync(HttpContext context, Role role)
    {
        var tokens = context.RequestServices.GetRequiredService<ApiTokens>();
        var bearer = Bearer(context);
        var token = bearer ?? context.Request.Cookies[Web.Dashboard.SessionCookie];
        // A browser sends the dashboard's cookie with any site's request; only a request that cannot change state,
        // or one from the dashboard's own pages, may use it. API clients send the token as a bearer.
        if (bearer is null && token is not null && !IsSafe(context.Request.Method)) RequireSameOrigin(context);
        var principal = await tokens.AuthenticateAsync(token, Address(context), context.RequestAborted)
            ?? throw ApiProblem.Unauthorized("an API token is required (Authorization: Bearer kat_…); it is unknown, " +
                "revoked or expired");
        if (principal.Role < role) throw ApiProblem.Forbidden($"this needs the {role.ToWire()} role; the token has " +
            $"{principal.Role.ToWire()}");
        return principal;
    }
}
