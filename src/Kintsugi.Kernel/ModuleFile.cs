using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Kernel;

/// <summary>
/// A kernel module file (.ko) as the machine side sees it before loading: its <c>.modinfo</c> fields,
/// build-id and livepatch markers. Reading never loads anything.
/// </summary>
public sealed class ModuleFile
{
    public string Path { get; }
    public ModuleName Name { get; }
    public IReadOnlyList<KeyValuePair<string, string>> ModInfo { get; }
    public BuildId? BuildId { get; }
    public long Size { get; }
    public string Sha256 { get; }

    private ModuleFile(string path, ModuleName name, IReadOnlyList<KeyValuePair<string, string>> modInfo,
        BuildId? buildId, long size, string sha256)
    {
        Path = path;
        Name = name;
        ModInfo = modInfo;
        BuildId = buildId;
        Size = size;
        Sha256 = sha256;
    }

    public string? this[string key] => ModInfo.FirstOrDefault(kv => kv.Key == key).Value;

    public bool IsLivepatch => this["livepatch"] == "Y";

    /// <summary>The kernel release this module was built for: the first word of its vermagic.</summary>
    public string? VermagicRelease => this["vermagic"]?.Split(' ', 2)[0];

    /// <summary>Reads and checks a module file. Throws <see cref="ModuleFileException"/> when it is not a kernel
    /// module.</summary>
    public static ModuleFile Read(string path)
    {
        byte[] image;
        try { image = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModuleFileException($"cannot read {path}: {e.Message}", e);
        }
        if (image.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xFD, (byte)'7', (byte)'z', (byte)'X', (byte)'Z', 0]))
            throw new ModuleFileException($"{path} is xz-compressed; decompress it first (xz -dk {path})");
        if (!ElfSectionTable.HasElfMagic(image))
            throw new ModuleFileException($"{path} is not a kernel module: it is not an ELF file");
        ElfSectionTable table;
        try { table = ElfSectionTable.Read(image); }
        catch (InvalidDataException e)
        {
            throw new ModuleFileException($"{path} is not a valid kernel module: " +
            $"{e.Message}", e);
        }
        if (table.Find(".gnu.linkonce.this_module") is null)
            throw new ModuleFileException($"{path} is not a kernel module: it has no .gnu.linkonce.this_module " +
                $"section (is it a plain object file?)");
        if (table.Find(".modinfo") is not { } modinfoSection)
            throw new ModuleFileException($"{path} is not a kernel module: it has no .modinfo section");

        var modInfo = ParseModInfo(table.Contents(modinfoSection));
        var nameText = modInfo.FirstOrDefault(kv => kv.Key == "name").Value
            ?? System.IO.Path.GetFileNameWithoutExtension(path);
        if (!ModuleName.TryParse(nameText, out var name))
            throw new ModuleFileException($"{path} declares an invalid module name '{nameText}'");
        var sha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(image));
        return new ModuleFile(System.IO.Path.GetFullPath(path), name, modInfo, table.FindBuildId(), image.LongLength,
            sha);
    }

    private static List<KeyValuePair<string, string>> ParseModInfo(ReadOnlySpan<byte> section)
    {
        var fields = new List<KeyValuePair<string, string>>();
        while (!section.IsEmpty)
        {
            var end = section.IndexOf((byte)0);
            var entry = end < 0 ? section : section[..end];
            section = end < 0 ? [] : section[(end + 1)..];
            if (entry.IsEmpty) continue;
            var text = System.Text.Encoding.UTF8.GetString(entry);
            var eq = text.IndexOf('=');
            if (eq > 0) fields.Add(new(text[..eq], text[(eq + 1)..]));
        }
        return fields;
    }
}

/// <summary>A kernel module name as the kernel knows it (dashes in file names become underscores).</summary>
[JsonConverter(typeof(ModuleNameJsonConverter))]
public readonly record struct ModuleName
{
    public string Value { get; }
    private ModuleName(string value) => Value = value;

    public static bool TryParse(string? text, out ModuleName name)
    {
        name = default;
        if (string.IsNullOrEmpty(text) || text.Length > 55) return false; // MODULE_NAME_LEN - 1
        var normalized = KernelObjectNames.Normalize(text);
        foreach (var c in normalized) if (!(char.IsAsciiLetterOrDigit(c) || c == '_')) return false;
        name = new ModuleName(normalized);
        return true;
    }

    public static ModuleName Parse(string text) =>
        TryParse(text, out var name) ? name : throw new ModuleFileException($"'{text}' is not a kernel module name");

    public override string ToString() => Value ?? "";
}

/// <summary>A file given as a kernel module is not one, or is unusable.</summary>
public sealed class ModuleFileException(string message, Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.InputRefused;
}

public sealed class ModuleNameJsonConverter : JsonConverter<ModuleName>
{
    public override ModuleName Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        ModuleName.Parse(reader.GetString() ?? "");
    public override void Write(Utf8JsonWriter writer, ModuleName value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.Value);
}
