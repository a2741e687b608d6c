using System.Globalization;
using System.Text.Json;

namespace Kintsugi.Testing;

/// <summary>
/// The structure OpenVEX v0.2.0 requires of a document (github.com/openvex/spec, OPENVEX-SPEC.md), checked
/// field by field, so that a document a scanner would reject fails a test here first.
/// </summary>
public static class OpenVexRules
{
    private static readonly string[] DocumentFields =
        ["@context", "@id", "author", "role", "timestamp", "last_updated", "version", "tooling", "statements"];
    private static readonly string[] StatementFields =
        ["@id", "version", "vulnerability", "timestamp", "last_updated", "products", "status", "supplier",
        "status_notes", "justification", "impact_statement", "action_statement", "action_statement_timestamp"];
    private static readonly string[] Statuses = ["not_affected", "affected", "fixed", "under_investigation"];
    private static readonly string[] Justifications =
        ["component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
        "vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist"];

    /// <summary>Every way <paramref name="document"/> departs from the specification; empty when it is valid.</summary>
    public static IReadOnlyList<string> Problems(JsonElement document)
    {
        var problems = new List<string>();
        if (document.ValueKind != JsonValueKind.Object) return ["the document is not a JSON object"];
        foreach (var property in document.EnumerateObject())
            if (!DocumentFields.Contains(property.Name)) problems.Add($"unknown document field '{property.Name}'");
        if (Text(document, "@context") is not { } context
            || !context.StartsWith("https://openvex.dev/ns", StringComparison.Ordinal))
            problems.Add("@context must be the OpenVEX namespace (https://openvex.dev/ns/v0.2.0)");
        if (Text(document, "@id") is not { } id || !Uri.TryCreate(id, UriKind.Absolute, out _))
            problems.Add("@id must be an IRI");
        if (Text(document, "author") is not { Length: > 0 }) problems.Add("author is required");
        if (!IsTime(document, "timestamp")) problems.Add("timestamp is required, RFC 3339");
        if (document.TryGetProperty("last_updated", out _) && !IsTime(document, "last_updated"))
            problems.Add("last_updated must be RFC 3339");
        if (!document.TryGetProperty("version", out var version) || version.ValueKind != JsonValueKind.Number
            || !version.TryGetInt32(out var v) || v < 1)
            problems.Add("version is required, an integer from 1");
        if (!document.TryGetProperty("statements", out var statements) || statements.ValueKind != JsonValueKind.Array)
            return [.. problems, "statements is required, an array"];
        var index = 0;
        foreach (var statement in statements.EnumerateArray())
        {
            var at = index++;
            problems.AddRange(StatementProblems(statement).Select(p => $"statements[{at}]: {p}"));
        }
        return problems;
    }

    private static IEnumerable<string> StatementProblems(JsonElement s)
    {
        foreach (var property in s.EnumerateObject())
            if (!StatementFields.Contains(property.Name)) yield return $"unknown statement field '{property.Name}'";
        if (!s.TryGetProperty("vulnerability", out var vulnerability) ||
            !(vulnerability.ValueKind == JsonValueKind.Object ? Text(vulnerability, "name") is { Length: > 0 }
            : vulnerability.ValueKind == JsonValueKind.String))
            yield return "vulnerability needs a name";
        if (!s.TryGetProperty("products", out var products) || products.ValueKind != JsonValueKind.Array
            || products.GetArrayLength() == 0)
            yield return "products must be a non-empty array";
        else
            foreach (var product in products.EnumerateArray())
            {
                if (Text(product, "@id") is not { Length: > 0 } productId
                    || !Uri.TryCreate(productId, UriKind.Absolute, out _))
                    yield return "a product needs an @id IRI";
                if (product.TryGetProperty("identifiers", out var identifiers))
                    foreach (var identifier in identifiers.EnumerateObject())
                    {
                        if (identifier.Name is not ("purl" or "cpe22" or "cpe23"))
                            yield return $"unknown identifier label '{identifier.Name}'";
                        if (identifier.Name == "purl"
                            && identifier.Value.GetString()?.StartsWith("pkg:", StringComparison.Ordinal) != true)
                            yield return "a purl identifier must be a package URL (pkg:...)";
                    }
            }
        var status = Text(s, "status");
        if (status is null || !Statuses.Contains(status))
            yield return $"status '{status}' is not one of {string.Join(", ", Statuses)}";
        if (status == "not_affected" && Text(s, "justification") is null && Text(s, "impact_statement") is null)
            yield return "not_affected needs a justification or an impact_statement";
        if (Text(s, "justification") is { } justification && !Justifications.Contains(justification))
            yield return $"unknown justification '{justification}'";
        if (status == "affected" && Text(s, "action_statement") is not { Length: > 0 })
            yield return "affected needs an action_statement";
        if (s.TryGetProperty("timestamp", out _) && !IsTime(s, "timestamp")) yield return "timestamp must be RFC 3339";
    }

    private static string? Text(JsonElement element, string name) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value)
        && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static bool IsTime(JsonElement element, string name) =>
        Text(element, name) is { } text && text.Contains('T') &&
        DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out _);
}
