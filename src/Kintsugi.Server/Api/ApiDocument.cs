using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.OpenApi;

namespace Kintsugi.Server.Api;

/// <summary>The role an operator endpoint requires, as the OpenAPI document states it.</summary>
public sealed record RequiredRole(Role Role);

/// <summary>
/// The request body an endpoint reads (it reads it itself, with size limits and refusals of its own), as the OpenAPI
/// document states it. Not <c>Accepts</c>: that would also make routing refuse other content types with 415.
/// </summary>
public sealed record RequestBody(Type Type, bool Optional, IReadOnlyList<string> ContentTypes);

/// <summary>
/// A query parameter an endpoint reads, as the OpenAPI document states it. Endpoints read query parameters only
/// through <see cref="Http.Query"/>, which refuses a name the endpoint did not declare, so none goes undocumented.
/// </summary>
public sealed record QueryParameter(string Name, string Description, QueryValue Value, IReadOnlyList<string> Values,
    bool Required);

/// <summary>What a query parameter's text must be.</summary>
public enum QueryValue
{
    Text,
    Integer,
    Time,
}

/// <summary>A reply other than JSON that a successful request may get instead (for example CSV for format=csv).
/// </summary>
public sealed record AlternativeReply(string ContentType, string Description);

/// <summary>How an agent-protocol endpoint authenticates its caller, as the OpenAPI document states it.</summary>
public enum AgentCredential
{
    /// <summary>None: the request body carries what proves the caller (an enrollment token).</summary>
    None,
    Machine,
    MachineOrAuditorToken,
}

/// <summary>The credential an agent-protocol endpoint takes.</summary>
public sealed record AgentEndpoint(AgentCredential Credential);

/// <summary>
/// The OpenAPI document served at <see cref="Path"/>, generated from the endpoints themselves: their routes,
/// request bodies, reply types (with their JSON schemas, from <see cref="Http.Json"/>), summaries and roles.
/// Nothing is written by hand, so the document cannot drift from the code.
/// </summary>
public static class ApiDocument
{
    public const string Path = "/api/v1/openapi.json";
    public const string ApiToken = "apiToken";
    public const string MachineCredential = "machineCredential";

    /// <summary>Summary and required role of an endpoint, for the document.</summary>
    public static RouteHandlerBuilder Describe(this RouteHandlerBuilder endpoint, string summary, Role role) =>
        endpoint.WithSummary(summary)
            .WithDescription($"Requires the {role.ToWire()} role (or higher).")
            .WithMetadata(new RequiredRole(role));

    /// <summary>Documents the body the endpoint reads as <typeparamref name="T"/> in one of <paramref
    /// name="contentTypes"/>.</summary>
    public static RouteHandlerBuilder Body<T>(this RouteHandlerBuilder endpoint, params string[] contentTypes) =>
        endpoint.WithMetadata(new RequestBody(typeof(T), false, contentTypes));

    public static RouteHandlerBuilder Body<T>(this RouteHandlerBuilder endpoint, bool optional,
        params string[] contentTypes) =>
        endpoint.WithMetadata(new RequestBody(typeof(T), optional, contentTypes));

    /// <summary>Declares a query parameter the endpoint reads (through <see cref="Http.Query"/>).</summary>
    public static RouteHandlerBuilder Query(this RouteHandlerBuilder endpoint, string name, string description,
        QueryValue value = QueryValue.Text, IReadOnlyList<string>? values = null, bool required = false) =>
        endpoint.WithMetadata(new QueryParameter(name, description, value, values ?? [], required));

    /// <summary>Documents a successful reply in <paramref name="contentType"/> besides the endpoint's JSON.</summary>
    public static RouteHandlerBuilder AlsoReplies(this RouteHandlerBuilder endpoint, string contentType,
        string description) =>
        endpoint.WithMetadata(new AlternativeReply(contentType, description));

    /// <summary>Summary of an agent-protocol endpoint (docs/protocol.md), authenticated by <paramref
    /// name="credential"/>.</summary>
    public static RouteHandlerBuilder DescribeAgent(this RouteHandlerBuilder endpoint, string summary,
        AgentCredential credential) =>
        endpoint.WithSummary(summary)
            .WithDescription(credential switch
            {
                AgentCredential.None => "No credential.",
                AgentCredential.Machine => "Machine credential.",
                _ => "Machine credential or an auditor token.",
            })
            .WithTags("agent")
            .WithMetadata(new AgentEndpoint(credential));

    public static void Add(IServiceCollection services) => services.AddOpenApi(options =>
    {
        options.OpenApiVersion = OpenApiSpecVersion.OpenApi3_1;
        options.AddDocumentTransformer((document, _, _) =>
        {
            document.Info = new OpenApiInfo
            {
                Title = "Kintsugi patch server",
                Version = "1",
                Description = "The agent protocol (docs/protocol.md) and the operator API (docs/server.md).",
            };
            document.Components ??= new OpenApiComponents();
            document.Components.SecuritySchemes = new Dictionary<string, IOpenApiSecurityScheme>
            {
                [ApiToken] = new OpenApiSecurityScheme
                {
                    Type = SecuritySchemeType.Http,
                    Scheme = "bearer",
                    Description = "kat_… API token (role admin, operator or auditor)",
                },
                [MachineCredential] = new OpenApiSecurityScheme
                {
                    Type = SecuritySchemeType.Http,
                    Scheme = "bearer",
                    Description = "kmc_… per-machine credential from enrollment",
                },
            };
            return Task.CompletedTask;
        });
        options.AddOperationTransformer(async (operation, context, cancellation) =>
        {
            // Every refusal is an RFC 9457 problem document.
            operation.Responses ??= new OpenApiResponses();
            operation.Responses["default"] = new OpenApiResponse
            {
                Description = "an RFC 9457 problem document",
                Content = new Dictionary<string, OpenApiMediaType>
                {
                    ["application/problem+json"] = new()
                    {
                        Schema = await context.GetOrCreateSchemaAsync(typeof(Kintsugi.Protocol.ProblemDocument), null,
                            cancellation),
                    },
                },
            };
            var metadata = context.Description.ActionDescriptor.EndpointMetadata;
            if (metadata.OfType<RequestBody>().SingleOrDefault() is { } body)
            {
                var content = new Dictionary<string, OpenApiMediaType>();
                foreach (var type in body.ContentTypes)
                    content[type] = new OpenApiMediaType
                    {
                        Schema = body.Type == typeof(byte[])
                            ? new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" }
                            : await context.GetOrCreateSchemaAsync(body.Type, null, cancellation),
                    };
                operation.RequestBody = new OpenApiRequestBody { Required = !body.Optional, Content = content };
            }
            foreach (var query in metadata.OfType<QueryParameter>())
            {
                operation.Parameters ??= [];
                operation.Parameters.Add(new OpenApiParameter
                {
                    Name = query.Name,
                    In = ParameterLocation.Query,
                    Description = query.Description,
                    Required = query.Required,
                    Schema = Schema(query),
                });
            }
            var alternatives = metadata.OfType<AlternativeReply>().ToList();
            if (alternatives.Count > 0)
            {
                var ok = operation.Responses.TryGetValue("200", out var existing) && existing is OpenApiResponse r
                    ? r : new OpenApiResponse { Description = "OK" };
                ok.Content ??= new Dictionary<string, OpenApiMediaType>();
                foreach (var alternative in alternatives)
                    ok.Content[alternative.ContentType] = new OpenApiMediaType
                    {
                        Schema =
                            new OpenApiSchema { Type = JsonSchemaType.String, Description = alternative.Description },
                    };
                operation.Responses["200"] = ok;
            }
            if (metadata.OfType<RequiredRole>().Any())
                operation.Security = [Requirement(ApiToken, context.Document)];
            if (metadata.OfType<AgentEndpoint>().SingleOrDefault() is { } agent)
                operation.Security = agent.Credential switch
                {
                    AgentCredential.None => [],
                    AgentCredential.Machine => [Requirement(MachineCredential, context.Document)],
                    _ => [Requirement(MachineCredential, context.Document), Requirement(ApiToken, context.Document)],
                };
        });
    });

    private static OpenApiSecurityRequirement Requirement(string scheme, OpenApiDocument? document) =>
        new() { [new OpenApiSecuritySchemeReference(scheme, document)] = [] };

    private static OpenApiSchema Schema(QueryParameter query)
    {
        var schema = query.Value switch
        {
            QueryValue.Integer => new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int64" },
            QueryValue.Time => new OpenApiSchema { Type = JsonSchemaType.String, Format = "date-time" },
            _ => new OpenApiSchema { Type = JsonSchemaType.String },
        };
        if (query.Values.Count > 0)
            schema.Enum = [.. query.Values.Select(v => (System.Text.Json.Nodes.JsonNode)v)];
        return schema;
    }
}
