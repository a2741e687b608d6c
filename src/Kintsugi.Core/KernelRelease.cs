using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi;

/// <summary>A kernel release exactly as <c>uname -r</c> prints it, for example <c>6.1.0-56-cloud-amd64</c>.</summary>
[JsonConverter(typeof(KernelReleaseJsonConverter))]
public readonly record struct KernelRelease
{
    public string Value { get; }

    private KernelRelease(string value) => Value = value;

    public static KernelRelease Parse(string text)
    {
        if (!TryParse(text, out var release))
            throw new FormatException($"'{text}' is not a kernel release (expected what `uname -r` prints, for " +
                $"example 6.1.0-56-cloud-amd64)");
        return release;
    }

    public static bool TryParse(string? text, out KernelRelease release)
    {
        release = default;
        text = text?.Trim();
        if (string.IsNullOrEmpty(text) || text.Length > 64 || !char.IsAsciiDigit(text[0])) return false;
        foreach (var c in text)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '+' or '_' or '~'))
                return false;
        release = new KernelRelease(text);
        return true;
    }

    /// <summary>Upstream version prefix (<c>6.1.0</c> of <c>6.1.0-56-cloud-amd64</c>).</summary>
    public Version UpstreamVersion
    {
        get
        {
            var end = 0;
            while (end < Value.Length && (char.IsAsciiDigit(Value[end]) || Value[end] == '.')) end++;
            var parts = Value[..end].TrimEnd('.').Split('.');
            return new Version(int.Parse(parts[0]), parts.Length > 1 ? int.Parse(parts[1]) : 0,
                parts.Length > 2 ? int.Parse(parts[2]) : 0);
        }
    }

    public override string ToString() => Value ?? "";
}

public sealed class KernelReleaseJsonConverter : JsonConverter<KernelRelease>
{
    public override KernelRelease Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        KernelRelease.Parse(reader.GetString() ?? "");
    public override void Write(Utf8JsonWriter writer, KernelRelease value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.Value);
}
