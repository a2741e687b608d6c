using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi;

/// <summary>
/// OpenVEX v0.2.0 (https://github.com/openvex/spec): how Kintsugi tells vulnerability scanners that a CVE is
/// fixed on a running kernel although its package version says otherwise. Written per machine
/// (<c>kintsugi status --format openvex</c>) and per fleet (the server's report).
/// </summary>
public sealed record OpenVexDocument(
    [property: JsonPropertyName("@context")] string Context,
    [property: JsonPropertyName("@id")] string Id,
    [property: JsonPropertyName("author")] string Author,
    [property: JsonPropertyName("role")] string Role,
    [property: JsonPropertyName("timestamp")] DateTimeOffset Timestamp,
    [property: JsonPropertyName("version")] int Version,
    [property: JsonPropertyName("tooling")] string Tooling,
    [property: JsonPropertyName("statements")] IReadOnlyList<OpenVexStatement> Statements)
{
    public const string ContextV020 = "https://openvex.dev/ns/v0.2.0";

    /// <summary>
    /// A document whose @id is derived from its statements: the same facts give the same IRI, and any change
    /// of fact gives a new one (scanners keep the newest by timestamp).
    /// </summary>
    public static OpenVexDocument
        Create(string author, string tooling, IReadOnlyList<OpenVexStatement> statements, DateTimeOffset timestamp)
    {
        var digest = SHA256.HashData(
            JsonSerializer.SerializeToUtf8Bytes(statements, OpenVexJson.Default.IReadOnlyListOpenVexStatement));
        return new OpenVexDocument(ContextV020, $"urn:kintsugi:openvex:{Convert.ToHexStringLower(digest)}", author,
            "Document Creator",
            timestamp, 1, tooling, statements);
    }

    public string ToJson() => JsonSerializer.Serialize(this, OpenVexJson.Default.OpenVexDocument);

    /// <summary>The Debian kernel image package as a package URL (what scanners match against dpkg).</summary>
    public static string DebianKernelPackage(string release, string? packageVersion, string architecture = "amd64") =>
        $"pkg:deb/debian/linux-image-{Uri.EscapeDataString(release)}"
        + (packageVersion is null ? "" : "@" + Uri.EscapeDataString(packageVersion)) + $"?arch={architecture}";

    /// <summary>A Debian binary package as a package URL (a library or a server a user-space patch fixes).</summary>
    public static string DebianPackage(string package, string? packageVersion, string architecture = "amd64") =>
        $"pkg:deb/debian/{Uri.EscapeDataString(package)}"
        + (packageVersion is null ? "" : "@" + Uri.EscapeDataString(packageVersion)) + $"?arch={architecture}";
}

public sealed record OpenVexStatement(
    [property: JsonPropertyName("vulnerability")] OpenVexVulnerability Vulnerability,
    [property: JsonPropertyName("products")] IReadOnlyList<OpenVexProduct> Products,
    [property: JsonPropertyName("status")] string Status,
    [property: JsonPropertyName("status_notes")] string? StatusNotes = null,
    [property: JsonPropertyName("action_statement")] string? ActionStatement = null,
    [property: JsonPropertyName("timestamp")] DateTimeOffset? Timestamp = null)
{
    /// <summary>The four statuses of the VEX minimum requirements.</summary>
    public static readonly IReadOnlyList<string> Statuses =
        ["not_affected", "affected", "fixed", "under_investigation"];
}

public sealed record OpenVexVulnerability([property: JsonPropertyName("name")] string Name);

/// <summary>A product: its IRI (a package URL for a package) and, when the IRI is not one, its purl as an
/// identifier.</summary>
public sealed record OpenVexProduct(
    [property: JsonPropertyName("@id")] string Id,
    [property: JsonPropertyName("identifiers")] IReadOnlyDictionary<string, string>? Identifiers = null);

[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(OpenVexDocument))]
[JsonSerializable(typeof(IReadOnlyList<OpenVexStatement>))]
public sealed partial class OpenVexJson : JsonSerializerContext;
