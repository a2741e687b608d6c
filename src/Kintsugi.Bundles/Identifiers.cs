using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Bundles;

/// <summary>A SHA-256 digest, written as 64 lowercase hex digits.</summary>
[JsonConverter(typeof(Sha256DigestJsonConverter))]
public readonly record struct Sha256Digest
{
    private readonly string _hex;

    private Sha256Digest(string hex) => _hex = hex;

    public bool IsEmpty => _hex is null;

    public static Sha256Digest Of(ReadOnlySpan<byte> data) => new(Convert.ToHexStringLower(SHA256.HashData(data)));

    /// <summary>Parses exactly 64 lowercase hex digits (the only form a manifest carries).</summary>
    public static Sha256Digest Parse(string hex)
    {
        if (!Hex.IsLowercase(hex, 64))
            throw new FormatException($"'{hex}' is not a SHA-256 digest (expected 64 lowercase hex digits)");
        return new Sha256Digest(hex);
    }

    public override string ToString() => _hex ?? "";
}

/// <summary>
/// Identifies a publisher key: the first 16 bytes of the SHA-256 of its DER SubjectPublicKeyInfo,
/// written as 32 lowercase hex digits.
/// </summary>
[JsonConverter(typeof(PublisherKeyIdJsonConverter))]
public readonly record struct PublisherKeyId
{
    public const int Length = 16;

    private readonly string _hex;

    private PublisherKeyId(string hex) => _hex = hex;

    public bool IsEmpty => _hex is null;

    public static PublisherKeyId FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Length)
            throw new FormatException($"a publisher key id is {Length} bytes, not {bytes.Length}");
        return new PublisherKeyId(Convert.ToHexStringLower(bytes));
    }

    /// <summary>The id of a key given its DER SubjectPublicKeyInfo.</summary>
    public static PublisherKeyId Of(ReadOnlySpan<byte> subjectPublicKeyInfo) =>
        FromBytes(SHA256.HashData(subjectPublicKeyInfo).AsSpan(0, Length));

    public static PublisherKeyId Parse(string hex)
    {
        if (!TryParse(hex, out var id)) throw new FormatException($"'{hex}' is not a publisher key id (expected " +
            $"{Length * 2} lowercase hex digits)");
        return id;
    }

    public static bool TryParse(string? hex, out PublisherKeyId id)
    {
        id = default;
        if (!Hex.IsLowercase(hex, Length * 2)) return false;
        id = new PublisherKeyId(hex!);
        return true;
    }

    public void WriteTo(Span<byte> destination) =>
        Convert.FromHexString(_hex ?? throw new InvalidOperationException("empty key id"), destination, out _, out _);

    public override string ToString() => _hex ?? "";
}

/// <summary>A CVE identifier such as <c>CVE-2024-1086</c>.</summary>
[JsonConverter(typeof(CveIdJsonConverter))]
public readonly record struct CveId
{
    public string Value { get; }

    private CveId(string value) => Value = value;

    public static CveId Parse(string text)
    {
        if (!TryParse(text, out var id))
            throw new FormatException($"'{text}' is not a CVE id (expected CVE-YYYY-NNNN, for example CVE-2024-1086)");
        return id;
    }

    public static bool TryParse(string? text, out CveId id)
    {
        id = default;
        // CVE-YYYY-N{4,19}
        if (text is null || text.Length is < 13 or > 28 || !text.StartsWith("CVE-", StringComparison.Ordinal)
            || text[8] != '-') return false;
        for (var i = 4; i < text.Length; i++)
            if (i != 8 && !char.IsAsciiDigit(text[i])) return false;
        id = new CveId(text);
        return true;
    }

    public override string ToString() => Value ?? "";
}

internal static class Hex
{
    public static bool IsLowercase(string? text, int length)
    {
        if (text is null || text.Length != length) return false;
        foreach (var c in text) if (!(char.IsAsciiDigit(c) || c is >= 'a' and <= 'f')) return false;
        return true;
    }
}

public sealed class Sha256DigestJsonConverter : JsonConverter<Sha256Digest>
{
    public override Sha256Digest Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        Sha256Digest.Parse(reader.TokenType == JsonTokenType.String ? reader.GetString()!
        : throw new JsonException("a SHA-256 digest must be a string"));
    public override void Write(Utf8JsonWriter writer, Sha256Digest value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}

public sealed class PublisherKeyIdJsonConverter : JsonConverter<PublisherKeyId>
{
    public override PublisherKeyId Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        PublisherKeyId.Parse(reader.TokenType == JsonTokenType.String ? reader.GetString()!
        : throw new JsonException("a key id must be a string"));
    public override void Write(Utf8JsonWriter writer, PublisherKeyId value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}

public sealed class CveIdJsonConverter : JsonConverter<CveId>
{
    public override CveId Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        CveId.Parse(reader.TokenType == JsonTokenType.String ? reader.GetString()!
        : throw new JsonException("a CVE id must be a string"));
    public override void Write(Utf8JsonWriter writer, CveId value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.Value);
}
