using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi;

/// <summary>A GNU build-id (the NT_GNU_BUILD_ID note the linker writes), usually a 20-byte SHA-1.</summary>
[JsonConverter(typeof(BuildIdJsonConverter))]
public readonly record struct BuildId
{
    private readonly string _hex;

    private BuildId(string hex) => _hex = hex;

    public static BuildId FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length is < 4 or > 64)
            throw new FormatException($"a build-id of {bytes.Length} bytes is implausible");
        return new BuildId(Convert.ToHexStringLower(bytes));
    }

    public static BuildId Parse(string hex)
    {
        if (!TryParse(hex, out var id))
            throw new FormatException($"'{hex}' is not a build-id (expected 8 to 128 hex digits)");
        return id;
    }

    public static bool TryParse(string? hex, out BuildId id)
    {
        id = default;
        hex = hex?.Trim();
        if (hex is null || hex.Length is < 8 or > 128 || hex.Length % 2 != 0) return false;
        foreach (var c in hex) if (!char.IsAsciiHexDigit(c)) return false;
        id = new BuildId(hex.ToLowerInvariant());
        return true;
    }

    /// <summary>
    /// Finds the GNU build-id in a sequence of ELF notes (the contents of a note section, a PT_NOTE
    /// segment or <c>/sys/kernel/notes</c>). Returns null when there is none.
    /// </summary>
    public static BuildId? FromNotes(ReadOnlySpan<byte> notes)
    {
        const uint NtGnuBuildId = 3;
        var position = 0;
        while (notes.Length - position >= 12)
        {
            var nameSize = BinaryPrimitives.ReadUInt32LittleEndian(notes[position..]);
            var descSize = BinaryPrimitives.ReadUInt32LittleEndian(notes[(position + 4)..]);
            var type = BinaryPrimitives.ReadUInt32LittleEndian(notes[(position + 8)..]);
            var nameStart = position + 12;
            var descStart = (long)nameStart + Align4(nameSize);
            var next = descStart + Align4(descSize);
            if (next > notes.Length || nameSize > int.MaxValue || descSize > int.MaxValue) return null;
            if (type == NtGnuBuildId && nameSize == 4 && notes.Slice(nameStart, 4).SequenceEqual("GNU\0"u8))
                return FromBytes(notes.Slice((int)descStart, (int)descSize));
            position = (int)next;
        }
        return null;
    }

    private static long Align4(uint size) => (size + 3L) & ~3L;

    public override string ToString() => _hex ?? "";
}

public sealed class BuildIdJsonConverter : JsonConverter<BuildId>
{
    public override BuildId Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        BuildId.Parse(reader.GetString() ?? "");
    public override void Write(Utf8JsonWriter writer, BuildId value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}
