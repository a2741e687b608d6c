using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Kintsugi.Protocol;
using Kintsugi.Server.Fleet;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Kintsugi.Server.Api;

/// <summary>Request plumbing shared by the API: JSON in and out, problem documents, authentication.</summary>
public static class Http
{
    /// <summary>The operator API's JSON: camelCase, missing required fields and nulls in non-nullable fields refused.</summary>
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
        TypeInfoResolver = new DefaultJsonTypeInfoResolver(),
    };

    public const int MaxJsonBody = 64 * 1024;

    public static string? Address(HttpContext context) => context.Connection.RemoteIpAddress?.ToString();

    public static string? Bearer(HttpContext context)
    {
        var header = context.Request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.Ordinal) ? header[7..].Trim() : null;
    }

    public static async Task<T> ReadAsync<T>(HttpContext context, JsonTypeInfo<T> type)
    {
        if (context.Request.ContentLength is > MaxJsonBody) throw new ApiProblem(413, "request too large", $"the body is larger than {MaxJsonBody} bytes");
        if (context.Request.ContentType is { } contentType && !contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
            throw new ApiProblem(415, "unsupported media type", "send application/json");
        using var limited = new MemoryStream();
        var buffer = new byte[8192];
        int read;
        while ((read = await context.Request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
        {
            limited.Write(buffer, 0, read);
            if (limited.Length > MaxJsonBody) throw new ApiProblem(413, "request too large", $"the body is larger than {MaxJsonBody} bytes");
        }
        try
        {
            return JsonSerializer.Deserialize(limited.GetBuffer().AsSpan(0, (int)limited.Length), type) ?? throw ApiProblem.BadRequest("the body is JSON null");
        }
        catch (JsonException e)
        {
            var cause = e.InnerException is FormatException f ? $" ({f.Message})" : "";
            throw ApiProblem.BadRequest($"the body is not a valid request: {e.Message}{cause}");
        }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException or OverflowException)
        {
            // The shared types parse at the edge (build-ids, states, digests) and say what is wrong.
            throw ApiProblem.BadRequest($"the body is not a valid request: {e.Message}");
        }
    }

    public static Task<T> ReadAsync<T>(HttpContext context) => ReadAsync(context, (JsonTypeInfo<T>)Json.GetTypeInfo(typeof(T)));

    public static Task WriteAsync<T>(HttpContext context, T value, int status = 200)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json; charset=utf-8";
        return JsonSerializer.SerializeAsync(context.Response.Body, value, (JsonTypeInfo<T>)Json.GetTypeInfo(typeof(T)), context.RequestAborted);
    }

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

    /// <summary>The API-token holder, who must have at least <paramref name="role"/>; else 401 or 403.</summary>
    public static async Task<Principal> RequireAsync(HttpContext context, Role role)
    {
        var tokens = context.RequestServices.GetRequiredService<ApiTokens>();
        var token = Bearer(context) ?? context.Request.Cookies[Web.Dashboard.SessionCookie];
        var principal = await tokens.AuthenticateAsync(token, Address(context), context.RequestAborted)
            ?? throw ApiProblem.Unauthorized("an API token is required (Authorization: Bearer kat_…); it is unknown, revoked or expired");
        if (principal.Role < role) throw ApiProblem.Forbidden($"this needs the {role.ToWire()} role; the token has {principal.Role.ToWire()}");
        return principal;
    }
}
