using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Kernel;

/// <summary>
/// What Kintsugi loaded in this boot, kept under /run/kintsugi (gone at reboot, like the loaded patch):
/// the kernel keeps no module metadata, so status and info read it from here.
/// </summary>
public sealed record LoadedRecord(string Name, string Path, string Sha256, DateTimeOffset LoadedAt,
    string? EffectiveVersion, IReadOnlyDictionary<string, string> ModInfo)
{
    /// <summary>The modinfo key a Kintsugi-built module uses to declare which distribution kernel version it makes this
    /// one equivalent to.</summary>
    public const string EffectiveVersionKey = "kintsugi_effective_version";

    public static void Write(MachinePaths paths, ModuleFile module)
    {
        var modInfo = module.ModInfo.GroupBy(kv => kv.Key)
            .ToDictionary(g => g.Key, g => string.Join(", ", g.Select(kv => kv.Value)));
        var record = new LoadedRecord(module.Name.Value, module.Path, module.Sha256, DateTimeOffset.UtcNow,
            module[EffectiveVersionKey], modInfo);
        AtomicFile.Write(FilePath(paths, module.Name),
            JsonSerializer.SerializeToUtf8Bytes(record, LoadedRecordJson.Default.LoadedRecord));
    }

    public static LoadedRecord? Read(MachinePaths paths, ModuleName name)
    {
        var path = FilePath(paths, name);
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize(File.ReadAllBytes(path), LoadedRecordJson.Default.LoadedRecord); }
        catch (JsonException) { return null; } // a record from an interrupted write is only informational
    }

    public static void Remove(MachinePaths paths, ModuleName name) => File.Delete(FilePath(paths, name));

    private static string FilePath(MachinePaths paths, ModuleName name) =>
        System.IO.Path.Combine(paths.Runtime, "loaded", name.Value + ".json");
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(LoadedRecord))]
internal sealed partial class LoadedRecordJson : JsonSerializerContext;
