using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Kintsugi.Protocol;
using Kintsugi.Server.Api;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Kintsugi.Server.Tests;

/// <summary>The served OpenAPI document is the code's: every endpoint, and each reply's schema is its type's
/// JSON.</summary>
public sealed class OpenApiSpecification : IAsyncLifetime
{
    private TestServer server = null!;
    private JsonElement document;

    public async Task InitializeAsync()
    {
        server = await TestServer.StartAsync();
        document = await server.GetJsonAsync(ApiDocument.Path, server.Client());
    }

    public async Task DisposeAsync() => await server.DisposeAsync();

    private IEnumerable<RouteEndpoint> ApiEndpoints() =>
        server.Server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e =>
            e.Metadata.GetMetadata<IExcludeFromDescriptionMetadata>() is not { ExcludeFromDescription: true })
            .Where(e => Route(e).StartsWith("/api/", StringComparison.Ordinal) || Route(e) == "/metrics");

    private static string Route(RouteEndpoint endpoint) => "/" + endpoint.RoutePattern.RawText!.TrimStart('/');

    private static IEnumerable<string> Methods(RouteEndpoint endpoint) =>
        endpoint.Metadata.GetMetadata<HttpMethodMetadata>()?.HttpMethods ?? [];

    private JsonElement Operation(RouteEndpoint endpoint, string method) =>
        document.GetProperty("paths").GetProperty(Route(endpoint)).GetProperty(method.ToLowerInvariant());

    [Fact]
    public void The_document_names_every_api_endpoint_with_a_summary()
    {
        var missing = new List<string>();
        foreach (var endpoint in ApiEndpoints())
            foreach (var method in Methods(endpoint))
            {
                if (!document.GetProperty("paths").TryGetProperty(Route(endpoint), out var item)
                    || !item.TryGetProperty(method.ToLowerInvariant(), out var operation)
                    || !operation.TryGetProperty("summary", out _))
                    missing.Add($"{method} {Route(endpoint)}");
            }
        Assert.True(missing.Count == 0, "undocumented: " + string.Join(", ", missing));
        Assert.True(ApiEndpoints().Count() >= 35, $"only {ApiEndpoints().Count()} endpoints were found");
    }

    [Fact]
    public void Every_operator_endpoint_states_its_role_and_every_refusal_is_a_problem_document()
    {
        foreach (var endpoint in ApiEndpoints())
            foreach (var method in Methods(endpoint))
            {
                var operation = Operation(endpoint, method);
                Assert.True(operation.GetProperty("responses").TryGetProperty("default", out var refusal),
                    $"{method} {Route(endpoint)}");
                Assert.True(refusal.GetProperty("content").TryGetProperty("application/problem+json", out _));
                if (endpoint.Metadata.GetMetadata<RequiredRole>() is { } role)
                {
                    Assert.Equal($"Requires the {role.Role.ToWire()} role (or higher).",
                        operation.GetProperty("description").GetString());
                    Assert.Equal(ApiDocument.ApiToken,
                        operation.GetProperty("security")[0].EnumerateObject().Single().Name);
                }
            }
    }

    [Fact]
    public void Each_json_reply_schema_has_exactly_the_properties_its_type_writes()
    {
        var compared = 0;
        foreach (var endpoint in ApiEndpoints())
            foreach (var method in Methods(endpoint))
                foreach (var produces in endpoint.Metadata.OfType<IProducesResponseTypeMetadata>())
                {
                    if (produces.Type is null || produces.Type == typeof(void)
                        || !produces.ContentTypes.Contains("application/json")) continue;
                    var where = $"{method} {Route(endpoint)} {produces.StatusCode}";
                    var response = Operation(endpoint, method).GetProperty("responses")
                        .GetProperty(produces.StatusCode.ToString());
                    Assert.True(response.TryGetProperty("content", out var content), where + ": no content");
                    var schema = Resolve(content.GetProperty("application/json").GetProperty("schema"));
                    AssertMatches(JsonTypeInfoOf(produces.Type), schema, where);
                    compared++;
                }
        Assert.True(compared >= 30, $"only {compared} JSON replies were compared");
    }

    [Fact]
    public void Each_json_request_body_schema_has_exactly_the_properties_its_type_reads()
    {
        var compared = 0;
        foreach (var endpoint in ApiEndpoints())
            foreach (var method in Methods(endpoint))
                if (endpoint.Metadata.GetMetadata<RequestBody>() is { } accepts
                    && accepts.ContentTypes.Contains("application/json"))
                {
                    var type = accepts.Type;
                    var body = Operation(endpoint, method).GetProperty("requestBody").GetProperty("content")
                        .GetProperty("application/json");
                    AssertMatches(JsonTypeInfoOf(type), Resolve(body.GetProperty("schema")),
                        $"{method} {Route(endpoint)} request");
                    compared++;
                }
        Assert.True(compared >= 10, $"only {compared} JSON requests were compared");
    }

    [Fact]
    public void Every_query_parameter_an_endpoint_declares_is_in_the_document_with_its_type_and_values()
    {
        var compared = 0;
        foreach (var endpoint in ApiEndpoints())
            foreach (var method in Methods(endpoint))
                foreach (var query in endpoint.Metadata.OfType<QueryParameter>())
                {
                    var where = $"{method} {Route(endpoint)} ?{query.Name}";
                    var parameter = Operation(endpoint, method).GetProperty("parameters").EnumerateArray()
                        .SingleOrDefault(p => p.GetProperty("name").GetString() == query.Name);
                    Assert.True(parameter.ValueKind == JsonValueKind.Object, where + ": not in the document");
                    Assert.Equal("query", parameter.GetProperty("in").GetString());
                    Assert.Equal(query.Required,
                        parameter.TryGetProperty("required", out var required) && required.GetBoolean());
                    var schema = parameter.GetProperty("schema");
                    Assert.Equal(query.Value == QueryValue.Integer ? "integer" : "string", Type(schema));
                    var values = schema.TryGetProperty("enum", out var e)
                        ? e.EnumerateArray().Select(v => v.GetString()!).ToList() : [];
                    Assert.Equal(query.Values, values);
                    compared++;
                }
        Assert.True(compared >= 12, $"only {compared} query parameters were compared");
    }

    [Fact]
    public void Reading_a_query_parameter_the_endpoint_did_not_declare_is_a_bug()
    {
        var context = new DefaultHttpContext();
        context.Request.QueryString = new QueryString("?severity=low");
        context.SetEndpoint(new Endpoint(_ => Task.CompletedTask,
            new EndpointMetadataCollection(new QueryParameter("format", "", QueryValue.Text, [], false)), "test"));

        Assert.Equal("", Http.Query(context, "format"));
        var bug = Assert.Throws<System.Diagnostics.UnreachableException>(() => Http.Query(context, "severity"));
        Assert.Contains("without declaring it", bug.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("csv", "text/csv")]
    [InlineData("html", "text/html")]
    [InlineData("json", "application/json")]
    public async Task Each_compliance_format_is_served_in_a_content_type_the_document_lists(string format,
        string mediaType)
    {
        using var reply = await server.Admin.GetAsync($"/api/v1/reports/compliance?format={format}");

        reply.EnsureSuccessStatusCode();
        Assert.Equal(mediaType, reply.Content.Headers.ContentType!.MediaType);
        var content = document.GetProperty("paths").GetProperty("/api/v1/reports/compliance").GetProperty("get")
            .GetProperty("responses").GetProperty("200").GetProperty("content");
        Assert.True(content.TryGetProperty(mediaType, out _), $"{mediaType} is not documented");
    }

    [Fact]
    public void Agent_endpoints_state_the_credential_they_take()
    {
        string[] Schemes(string path, string method) =>
            document.GetProperty("paths").GetProperty(path).GetProperty(method).TryGetProperty("security", out var s)
                ? [.. s.EnumerateArray().SelectMany(r => r.EnumerateObject()).Select(p => p.Name)] : [];

        Assert.Empty(Schemes(ProtocolPaths.Enroll, "post"));
        Assert.Equal([ApiDocument.MachineCredential], Schemes(ProtocolPaths.CheckIn, "post"));
        Assert.Equal([ApiDocument.MachineCredential], Schemes(ProtocolPaths.Events, "get"));
        Assert.Equal([ApiDocument.MachineCredential, ApiDocument.ApiToken],
            Schemes(ProtocolPaths.BundlePrefix + "{digest}", "get"));
    }

    private static JsonTypeInfo JsonTypeInfoOf(Type type) =>
        OperatorJson.Default.GetTypeInfo(type) ?? ProtocolJson.Default.GetTypeInfo(type)
        ?? throw new Xunit.Sdk.XunitException($"{type} is in neither JSON context: the CLI could not read it");

    /// <summary>The schema itself, behind a <c>$ref</c> or a nullable's <c>oneOf: [null, ...]</c>.</summary>
    private JsonElement Resolve(JsonElement schema)
    {
        if (schema.TryGetProperty("oneOf", out var choices))
            return Resolve(choices.EnumerateArray()
                .Single(c => !(c.TryGetProperty("type", out var t) && t.GetString() == "null")));
        if (!schema.TryGetProperty("$ref", out var reference)) return schema;
        var name = reference.GetString()!.Split('/')[^1];
        return document.GetProperty("components").GetProperty("schemas").GetProperty(name);
    }

    /// <summary>Objects: the same property names, recursively; arrays: the same for their items.</summary>
    private void AssertMatches(JsonTypeInfo type, JsonElement schema, string where)
    {
        if (type.Kind == JsonTypeInfoKind.Enumerable)
        {
            Assert.Equal("array", Type(schema));
            AssertMatches(JsonTypeInfoOf(type.ElementType!), Resolve(schema.GetProperty("items")), where + "[]");
            return;
        }
        if (type.Kind != JsonTypeInfoKind.Object) return;
        var expected = type.Properties.Select(p => p.Name).Order(StringComparer.Ordinal).ToList();
        var actual = schema.GetProperty("properties").EnumerateObject().Select(p => p.Name)
            .Order(StringComparer.Ordinal).ToList();
        Assert.True(expected.SequenceEqual(actual), $"{where} ({type.Type.Name}): code writes " +
            $"[{string.Join(", ", expected)}], document says [{string.Join(", ", actual)}]");
        foreach (var property in type.Properties)
            if (property.PropertyType != typeof(string) && JsonTypeInfoOf(
                property.PropertyType) is { Kind: JsonTypeInfoKind.Object or JsonTypeInfoKind.Enumerable } inner)
                AssertMatches(inner, Resolve(schema.GetProperty("properties").GetProperty(property.Name)),
                    $"{where}.{property.Name}");
    }

    private static string? Type(JsonElement schema) => schema.TryGetProperty("type", out var t)
        ? t.ValueKind == JsonValueKind.Array ? t.EnumerateArray().Select(e => e.GetString()).First(s => s != "null")
        : t.GetString()
        : null;
}
