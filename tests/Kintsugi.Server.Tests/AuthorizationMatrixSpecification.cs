using System.Net;
using System.Net.Http.Headers;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Kintsugi.Server.Tests;

/// <summary>
/// Who may call what, as one table: every endpoint the server maps (a new one without a row fails), each called
/// by anonymous, a machine credential, and an auditor, operator and admin API token. Below the row's level an API
/// call is refused with 401 (no or a foreign credential) or 403 (a lower role), a dashboard page sends the
/// browser to /login; at or above it, the call gets past authorization (any other answer: a fake id is 404, an
/// empty body 400).
/// </summary>
public sealed class AuthorizationMatrixSpecification : IAsyncLifetime
{
    /// <summary>The least a caller must be. Roles are ordered; a machine credential is not an API token.</summary>
    public enum Level
    {
        Anyone, SignOut, EnrollmentToken, Machine, MachineOrAuditor, Auditor, Operator, Admin,
        DashboardAuditor, DashboardOperator
    }

    public enum Caller { Anonymous, Machine, Auditor, Operator, Admin }

    private const string Release = "r_0000000000000000";
    private const string MachineId = "m_0000000000000000";
    private const string Digest = "0000000000000000000000000000000000000000000000000000000000000000";
    private const string Build = "3b43fad5a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6";

    /// <summary>The specification: method, route as mapped, the request path used, and the least caller.</summary>
    public static readonly (string Method, string Route, string Path, Level Level)[] Matrix =
    [
        ("GET", "/healthz", "/healthz", Level.Anyone),
        ("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", Level.Anyone),
        ("GET", "/apt/{**path}", "/apt/dists/stable/InRelease", Level.Anyone),
        ("POST", "/api/v1/agent/enroll", "/api/v1/agent/enroll", Level.EnrollmentToken),
        ("POST", "/api/v1/agent/checkin", "/api/v1/agent/checkin", Level.Machine),
        ("GET", "/api/v1/agent/events", "/api/v1/agent/events?epoch=999999999", Level.Machine),
        ("GET", "/api/v1/bundles/{digest}", $"/api/v1/bundles/{Digest}", Level.MachineOrAuditor),
        ("GET", "/metrics", "/metrics", Level.Auditor),
        ("GET", "/api/v1/server", "/api/v1/server", Level.Auditor),
        ("GET", "/api/v1/releases", "/api/v1/releases", Level.Auditor),
        ("GET", "/api/v1/releases/{id}", $"/api/v1/releases/{Release}", Level.Auditor),
        ("POST", "/api/v1/releases", "/api/v1/releases", Level.Operator),
        ("POST", "/api/v1/releases/{id}/promote", $"/api/v1/releases/{Release}/promote", Level.Operator),
        ("POST", "/api/v1/releases/{id}/revoke", $"/api/v1/releases/{Release}/revoke", Level.Operator),
        ("POST", "/api/v1/metadata", "/api/v1/metadata", Level.Operator),
        ("GET", "/api/v1/metadata/{build}", $"/api/v1/metadata/{Build}", Level.Auditor),
        ("POST", "/api/v1/trust-root", "/api/v1/trust-root", Level.Admin),
        ("GET", "/api/v1/trust-root", "/api/v1/trust-root", Level.Auditor),
        ("GET", "/api/v1/timestamp-key", "/api/v1/timestamp-key", Level.Auditor),
        ("GET", "/api/v1/channels", "/api/v1/channels", Level.Auditor),
        ("PUT", "/api/v1/channels/{name}", "/api/v1/channels/production", Level.Admin),
        ("GET", "/api/v1/machines", "/api/v1/machines", Level.Auditor),
        ("GET", "/api/v1/machines/{id}", $"/api/v1/machines/{MachineId}", Level.Auditor),
        ("POST", "/api/v1/machines/{id}/move", $"/api/v1/machines/{MachineId}/move", Level.Operator),
        ("POST", "/api/v1/machines/{id}/approve-reenroll", $"/api/v1/machines/{MachineId}/approve-reenroll",
        Level.Operator),
        ("DELETE", "/api/v1/machines/{id}", $"/api/v1/machines/{MachineId}", Level.Operator),
        ("GET", "/api/v1/enrollment-tokens", "/api/v1/enrollment-tokens", Level.Operator),
        ("POST", "/api/v1/enrollment-tokens", "/api/v1/enrollment-tokens", Level.Operator),
        ("DELETE", "/api/v1/enrollment-tokens/{id}", "/api/v1/enrollment-tokens/et_0000000000000000", Level.Operator),
        ("GET", "/api/v1/api-tokens", "/api/v1/api-tokens", Level.Admin),
        ("POST", "/api/v1/api-tokens", "/api/v1/api-tokens", Level.Admin),
        ("DELETE", "/api/v1/api-tokens/{id}", "/api/v1/api-tokens/at_0000000000000000", Level.Admin),
        ("GET", "/api/v1/keys", "/api/v1/keys", Level.Auditor),
        ("POST", "/api/v1/keys", "/api/v1/keys", Level.Admin),
        ("POST", "/api/v1/keys/{id}/retire", "/api/v1/keys/0000000000000000/retire", Level.Admin),
        ("GET", "/api/v1/audit", "/api/v1/audit", Level.Auditor),
        ("GET", "/api/v1/audit/verify", "/api/v1/audit/verify", Level.Auditor),
        ("GET", "/api/v1/reports/fleet", "/api/v1/reports/fleet", Level.Auditor),
        ("GET", "/api/v1/reports/exposure", "/api/v1/reports/exposure", Level.Auditor),
        ("GET", "/api/v1/reports/compliance", "/api/v1/reports/compliance", Level.Auditor),
        ("GET", "/api/v1/reports/openvex", "/api/v1/reports/openvex", Level.Auditor),
        ("POST", "/api/v1/apt/packages", "/api/v1/apt/packages", Level.Operator),
        ("GET", "/api/v1/export", "/api/v1/export", Level.Operator),
        ("POST", "/api/v1/import", "/api/v1/import", Level.Operator),
        ("GET", "/login", "/login", Level.Anyone),
        ("POST", "/login", "/login", Level.Anyone),
        ("GET", "/logout", "/logout", Level.SignOut),
        ("GET", "/", "/", Level.DashboardAuditor),
        ("GET", "/machines", "/machines", Level.DashboardAuditor),
        ("GET", "/machines/{id}", $"/machines/{MachineId}", Level.DashboardAuditor),
        ("GET", "/releases", "/releases", Level.DashboardAuditor),
        ("POST", "/releases/{id}/promote", $"/releases/{Release}/promote", Level.DashboardOperator),
        ("POST", "/releases/{id}/revoke", $"/releases/{Release}/revoke", Level.DashboardOperator),
        ("GET", "/exposure", "/exposure", Level.DashboardAuditor),
        ("GET", "/audit", "/audit", Level.DashboardAuditor),
    ];

    private TestServer server = null!;
    private readonly Dictionary<Caller, string?> credentials = [];

    public async Task InitializeAsync()
    {
        server = await TestServer.StartAsync();
        var machine = new SimulatedAgent(server, Kernels.Debian61, "matrix");
        await machine.EnrollAsync(await server.EnrollmentTokenAsync());
        credentials[Caller.Anonymous] = null;
        credentials[Caller.Machine] = machine.Credential;
        credentials[Caller.Auditor] = await server.TokenAsync(Role.Auditor, "matrix-auditor");
        credentials[Caller.Operator] = await server.TokenAsync(Role.Operator, "matrix-operator");
        credentials[Caller.Admin] = server.AdminToken;
    }

    public async Task DisposeAsync() => await server.DisposeAsync();

    /// <summary>What the caller must get: null when authorization lets it through.</summary>
    private static string? Refusal(Level level, Caller caller)
    {
        var role = caller switch { Caller.Auditor => 1, Caller.Operator => 2, Caller.Admin => 3, _ => 0 };
        var apiToken = role > 0;
        string? Api(int needed) => role >= needed ? null : apiToken ? "403" : "401";
        return level switch
        {
            Level.Anyone => null,
            Level.SignOut => "login", // everyone, signed in or not, ends at the sign-in page
            Level.EnrollmentToken => "401", // nobody here holds one
            Level.Machine => caller == Caller.Machine ? null : "401",
            Level.MachineOrAuditor => caller == Caller.Machine ? null : Api(1),
            Level.Auditor => Api(1),
            Level.Operator => Api(2),
            Level.Admin => Api(3),
            Level.DashboardAuditor => role >= 1 ? null : "login",
            Level.DashboardOperator => Api(2),
            _ => throw new ArgumentOutOfRangeException(nameof(level)),
        };
    }

    private static string Outcome(HttpResponseMessage response) => response.StatusCode switch
    {
        HttpStatusCode.Unauthorized => "401",
        HttpStatusCode.Forbidden => "403",
        HttpStatusCode.Redirect when response.Headers.Location?.OriginalString.StartsWith("/login",
        StringComparison.Ordinal) == true => "login",
        _ => "through",
    };

    [Fact]
    public async Task Every_endpoint_answers_every_caller_as_the_matrix_says()
    {
        var origin = server.BaseAddress.GetLeftPart(UriPartial.Authority);
        var wrong = new List<string>();
        foreach (var (method, _, path, level) in Matrix)
            foreach (var (caller, credential) in credentials)
            {
                using var http = server.Client(credential, followRedirects: false);
                using var request = new HttpRequestMessage(new HttpMethod(method), path);
                // A same-origin browser's header, so only the role decides (cross-origin: CrossOriginSpecification).
                request.Headers.Add("Origin", origin);
                if (path == "/api/v1/agent/enroll")
                    request.Content =
                        new StringContent(
                        $$"""{"token":"ket_{{new string('A', 43)}}","hostname":"x",""" +
                        $"\"machineId\":\"{new string('a', 32)}\",\"kernel\":{{\"release\":\"6.1.0-56-cloud-amd64\"," +
                        $"\"buildId\":\"{Build}\"}},\"agentVersion\":\"0.1.0\"}}",
                        new MediaTypeHeaderValue("application/json"));
                using var response = await http.SendAsync(request);
                var expected = Refusal(level, caller) ?? "through";
                var actual = Outcome(response);
                if (actual != expected) wrong.Add($"{method} {path} as {caller}: expected {expected}, got " +
                    $"{(int)response.StatusCode} ({actual})");
            }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
    }

    [Fact]
    public void The_matrix_has_a_row_for_every_endpoint_the_server_maps_and_no_other()
    {
        var mapped = server.Server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.Metadata.GetMetadata<HttpMethodMetadata>() is not null)
            .SelectMany(e => e.Metadata.GetMetadata<HttpMethodMetadata>()!.HttpMethods
                .Select(m => $"{m} /{e.RoutePattern.RawText!.TrimStart('/')}"))
            .ToHashSet();
        var specified = Matrix.Select(r => $"{r.Method} {r.Route}").ToHashSet();
        Assert.Equal(Matrix.Length, specified.Count);
        Assert.True(mapped.SetEquals(specified),
            $"mapped without a row: {string.Join(", ", mapped.Except(specified))}; rows not mapped: " +
            $"{string.Join(", ", specified.Except(mapped))}");
    }
}
