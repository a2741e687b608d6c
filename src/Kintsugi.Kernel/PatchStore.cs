using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Kernel;

/// <summary>Where an installed patch stands in the boot-time life cycle.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BootState>))]
public enum BootState
{
    /// <summary>Installed, not yet loaded by a boot.</summary>
    Installed,
    /// <summary>
    /// Copied into the store by an apply (<see cref="PatchApplier"/>) that has not started loading it. Never
    /// loaded at boot: a staged patch found later belongs to an interrupted apply and is discarded.
    /// </summary>
    Staged,
    /// <summary>Loaded, not yet confirmed healthy: a crash or reboot now quarantines it.</summary>
    Pending,
    /// <summary>Loaded and confirmed healthy after the settle period.</summary>
    Healthy,
    /// <summary>Not loaded automatically any more: a load was followed by a crash, or by kernel problems.</summary>
    Quarantined,
}

/// <summary>A livepatch module kept under /var/lib/kintsugi/&lt;release&gt;/ for re-application at boot.</summary>
/// <param name="EffectiveUname">
/// Whether it was applied showing the effective version in uname by an explicit choice (the agent's
/// <c>effective-uname</c> key), kept so that its later loads (boot, a revert to it) show the same; null: each load
/// follows the machine's switch file (<see cref="Kintsugi.Kernel.EffectiveUname.Enabled"/>).
/// </param>
public sealed record InstalledPatch(
    string Name,
    string Sha256,
    long Sequence,
    DateTimeOffset InstalledAt,
    BootState BootState,
    DateTimeOffset? LastLoadAt = null,
    string? Note = null,
    PatchOrigin? Origin = null,
    string? BootId = null,
    IReadOnlyList<string>? Replaces = null,
    string? Problem = null,
    int UnconfirmedBoots = 0,
    bool ConfirmedBefore = false,
    bool? EffectiveUname = null)
{
    /// <summary>
    /// Boots in a row that ended before a patch that had run healthy before was confirmed again, before it is
    /// quarantined: one such boot is as likely a power loss or a reset as a crash the patch caused.
    /// </summary>
    public const int UnconfirmedBootsBeforeQuarantine = 3;

    [JsonIgnore] public ModuleName ModuleName => ModuleName.Parse(Name);

    /// <summary>Pending since a load in the boot that is running now (an apply in progress or interrupted in this boot,
    /// not followed by a crash).</summary>
    [JsonIgnore]
    public bool PendingInThisBoot =>
        BootState == BootState.Pending && BootId is not null && BootId == RunningKernel.BootId;
}

/// <summary>
/// Where an installed patch came from, when it came from a signed bundle: what status and the agent report
/// (level, CVEs fixed, the bundle's digest). The runtime does not depend on the bundle format; the agent
/// copies these facts from the verified manifest.
/// </summary>
public sealed record PatchOrigin(string Bundle, int Level, string PublisherKeyId, IReadOnlyList<string> Fixes,
    IReadOnlyList<FixedCve> Cves, string? EffectiveVersion);

/// <summary>A CVE a patch fixes: id, severity word and publication date (YYYY-MM-DD), as the bundle manifest states
/// them.</summary>
public sealed record FixedCve(string Id, string Severity, string Published);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(InstalledPatch))]
[JsonSerializable(typeof(ApplyAttempt))]
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

    /// <summary>Copies the module into the store, then writes its record: a crash between leaves no record, so nothing
    /// half-installed is ever loaded.</summary>
    public InstalledPatch Install(ModuleFile module) => Install(module, BootState.Installed);

    /// <summary>Installs a module with its record in <paramref name="state"/> (module first, then the
    /// record).</summary>
    public InstalledPatch
        Install(ModuleFile module, BootState state, PatchOrigin? origin = null, IReadOnlyList<string>? replaces = null,
        bool? effectiveUname = null)
    {
        AtomicFile.Copy(module.Path, ModulePath(module.Name));
        var sequence = List().Select(p => p.Sequence).DefaultIfEmpty(0).Max() + 1;
        var record = new InstalledPatch(module.Name.Value, module.Sha256, sequence, DateTimeOffset.UtcNow, state,
            Origin: origin, Replaces: replaces,
            EffectiveUname: effectiveUname);
        Save(record);
        return record;
    }

    /// <summary>
    /// Finishes or undoes what an interrupted apply left (the records are the apply journal): a staged
    /// patch never started loading, so it is discarded; a patch that a confirmed one replaces was meant to
    /// be removed, so it is. Returns one line per change, for the log.
    /// </summary>
    public IReadOnlyList<string> RecoverInterruptedApply()
    {
        var changes = new List<string>();
        var records = List();
        foreach (var staged in records.Where(r => r.BootState == BootState.Staged))
        {
            Uninstall(staged.ModuleName);
            changes.Add($"discarded {staged.Name}: its apply was interrupted before the load");
        }
        // Only an older record is replaced: a module name can come back in a later level, installed after the one that
        // replaced it.
        var superseded = records.Where(r => r.BootState != BootState.Staged && records.Any(newer =>
            newer.BootState == BootState.Healthy && newer.Sequence > r.Sequence
            && newer.Replaces?.Contains(r.Name) == true)).ToList();
        foreach (var old in superseded)
        {
            Uninstall(old.ModuleName);
            changes.Add($"removed {old.Name}: a confirmed patch replaces it");
        }
        return changes;
    }

    /// <summary>The outcome of the last apply for this release (written by the agent), or null.</summary>
    public ApplyAttempt? LastAttempt
    {
        get
        {
            var path = AttemptPath;
            if (!File.Exists(path)) return null;
            try { return JsonSerializer.Deserialize(File.ReadAllBytes(path), PatchStoreJson.Default.ApplyAttempt); }
            catch (JsonException) { return null; } // written atomically; unreadable only if edited by hand
        }
    }

    public void SaveAttempt(ApplyAttempt attempt) => AtomicFile.Write(AttemptPath,
        JsonSerializer.SerializeToUtf8Bytes(attempt, PatchStoreJson.Default.ApplyAttempt));

    private string AttemptPath => Path.Combine(Directory, "attempt", "last.json");

    /// <summary>
    /// An operator's retry of a quarantined patch: it becomes installed again (loaded at the next boot or apply,
    /// under the same crash-loop guard). Returns the record, or null when no such patch is installed.
    /// </summary>
    public InstalledPatch? Retry(ModuleName name)
    {
        if (Find(name) is not { } record || !File.Exists(ModulePath(name))) return null;
        if (record.BootState != BootState.Quarantined) return record;
        var retried = record with
        {
            BootState = BootState.Installed,
            Note = $"retried by an operator after: {record.Note}",
            Problem = null,
            UnconfirmedBoots = 0
        };
        Save(retried);
        return retried;
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
        AtomicFile.Write(RecordPath(record.ModuleName),
        JsonSerializer.SerializeToUtf8Bytes(record, PatchStoreJson.Default.InstalledPatch));

    private static InstalledPatch? ReadRecord(string path)
    {
        try { return JsonSerializer.Deserialize(File.ReadAllBytes(path), PatchStoreJson.Default.InstalledPatch); }
        catch (JsonException e)
        {
            throw new LivepatchException($"the patch record {path} is corrupt ({e.Message}); remove it and install " +
                $"the patch again", ExitCode.Environment, e);
        }
    }
}
