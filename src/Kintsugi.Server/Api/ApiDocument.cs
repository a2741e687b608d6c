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

    /// <summary>Summary of an agent-protocol endpoint (docs/protocol.md), authenticated as <paramref
    /// name="credential"/>.</summary>
    public static RouteHandlerBuilder DescribeAgent(this RouteHandlerBuilder endpoint, string summary,
        string credential) =>
        endpoint.WithSummary(summary).WithDescription(credential).WithTags("agent");

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
            if (metadata.OfType<RequiredRole>().Any())
                operation.Security = [new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(ApiToken,
                    context.Document)] = [] }];
        });
    });
}
