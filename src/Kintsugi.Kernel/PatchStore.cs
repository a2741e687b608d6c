using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Kernel;

/// <summary>Where an installed patch stands in the boot-time life cycle.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BootState>))]
public enum BootState
{
    /// <summary>Installed, not yet loaded by a boot.</summary>
    Installed,
    /// <summary>Loaded, not yet confirmed healthy: a crash or reboot now quarantines it.</summary>
    Pending,
    /// <summary>Loaded and confirmed healthy after the settle period.</summary>
    Healthy,
    /// <summary>Not loaded automatically any more: a load was followed by a crash, or by kernel problems.</summary>
    Quarantined,
}

/// <summary>A livepatch module kept under /var/lib/kintsugi/&lt;release&gt;/ for re-application at boot.</summary>
public sealed record InstalledPatch(
    string Name,
    string Sha256,
    long Sequence,
    DateTimeOffset InstalledAt,
    BootState BootState,
    DateTimeOffset? LastLoadAt = null,
    string? Note = null)
{
    [JsonIgnore] public ModuleName ModuleName => ModuleName.Parse(Name);
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(InstalledPatch))]
internal sealed partial class PatchStoreJson : JsonSerializerContext;

/// <summary>
/// The installed patches of one kernel release. Every change is written atomically, so a crash at any
/// point leaves each record whole: either before or after the change.
/// </summary>
public sealed class PatchStore(MachinePaths paths, KernelRelease release)
{
    public string Directory { get; } = Path.Combine(paths.State, release.Value);

    public string ModulePath(ModuleName name) => Path.Combine(Directory, name.Value + ".ko");
    private string RecordPath(ModuleName name) => Path.Combine(Directory, name.Value + ".json");

    public IReadOnlyList<InstalledPatch> List()
    {
        if (!System.IO.Directory.Exists(Directory)) return [];
        return System.IO.Directory.GetFiles(Directory, "*.json")
            .Select(ReadRecord)
            .Where(r => r is not null && File.Exists(ModulePath(r.ModuleName)))
            .Select(r => r!)
            .OrderBy(r => r.Sequence).ToList();
    }

    public InstalledPatch? Find(ModuleName name) => File.Exists(RecordPath(name)) ? ReadRecord(RecordPath(name)) : null;

    /// <summary>Copies the module into the store, then writes its record: a crash between leaves no record, so nothing half-installed is ever loaded.</summary>
    public InstalledPatch Install(ModuleFile module)
    {
        AtomicFile.Copy(module.Path, ModulePath(module.Name));
        var sequence = List().Select(p => p.Sequence).DefaultIfEmpty(0).Max() + 1;
        var record = new InstalledPatch(module.Name.Value, module.Sha256, sequence, DateTimeOffset.UtcNow, BootState.Installed);
        Save(record);
        return record;
    }

    public bool Uninstall(ModuleName name)
    {
        var existed = File.Exists(RecordPath(name));
        // Record first: a module file without a record is ignored, never loaded.
        File.Delete(RecordPath(name));
        File.Delete(ModulePath(name));
        AtomicFile.SyncDirectory(Directory);
        return existed;
    }

    public void Save(InstalledPatch record) =>
        AtomicFile.Write(RecordPath(record.ModuleName), JsonSerializer.SerializeToUtf8Bytes(record, PatchStoreJson.Default.InstalledPatch));

    private static InstalledPatch? ReadRecord(string path)
    {
        try { return JsonSerializer.Deserialize(File.ReadAllBytes(path), PatchStoreJson.Default.InstalledPatch); }
        catch (JsonException e)
        {
            throw new LivepatchException($"the patch record {path} is corrupt ({e.Message}); remove it and install the patch again", ExitCode.Environment, e);
        }
    }
}
