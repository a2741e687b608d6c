using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Kernel.Build;

/// <summary>
/// What a livepatch module is and how it was made: embedded in the module's <c>.kintsugi.manifest</c>
/// section and written beside it as manifest.json. A later <c>--base</c> build reads it back.
/// </summary>
public sealed record BuildManifest(
    int Format,
    string Module,
    string Name,
    int Level,
    ManifestTarget Target,
    IReadOnlyList<ManifestPatch> Patches,
    IReadOnlyList<string> Cves,
    IReadOnlyList<ManifestUnit> Units,
    IReadOnlyList<ManifestFunction> Functions,
    IReadOnlyList<ManifestSymbol> Symbols,
    ManifestFidelity Fidelity,
    string Builder,
    DateTimeOffset BuiltAt,
    Livepatch.ManifestSigner? Signer = null,
    IReadOnlyList<ManifestInertSite>? InertSites = null)
{
    public const int CurrentFormat = 1;

    public byte[] ToUtf8() => JsonSerializer.SerializeToUtf8Bytes(this, BuildManifestJson.Default.BuildManifest);

    public static BuildManifest Read(string path)
    {
        try
        {
            var manifest = JsonSerializer.Deserialize(File.ReadAllBytes(path), BuildManifestJson.Default.BuildManifest)
                ?? throw new ModuleBuildException($"{path} is empty");
            if (manifest.Format != CurrentFormat)
                throw new ModuleBuildException(
                    $"{path} has manifest format {manifest.Format}; this kintsugi reads format {CurrentFormat}");
            return manifest;
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new ModuleBuildException($"{path} is not a readable Kintsugi build manifest: {e.Message}", e);
        }
    }
}

public sealed record ManifestTarget(string Release, string? PackageVersion, string BuildId);

/// <summary>One source patch; <c>File</c> is its copy under the build's patches/ directory (for cumulative
/// builds).</summary>
/// <param name="Context">True for a change applied with the fixes that selects no unit (a companion header's
/// additions).</param>
public sealed record ManifestPatch(string Name, string Sha256, string? Subject, string File, int Level,
    bool? Context = null);

public sealed record ManifestUnit(string Source, string Object, string PatchedObject, IReadOnlyList<string> Changed,
    IReadOnlyList<string> New);

public sealed record ManifestFunction(string Object, string Name, int Sympos, string Resolution, string Unit);

/// <summary>A symbol of the running kernel the patch binds at load time, and how it was identified.</summary>
public sealed record ManifestSymbol(string Object, string Name, int Sympos, string Resolution, string Binding);

/// <summary>
/// A tracepoint site of replaced code left disabled: its key lives in the patched module and is bound only when that
/// module loads, too late for the kernel to switch the livepatch's copy of the site (as kpatch does).
/// </summary>
/// <param name="Use">StaticBranch (the tracepoint's key) or StaticCall (its static call).</param>
public sealed record ManifestInertSite(string Object, string Unit, string Function, string Key, string Use);

/// <summary>Whether the touched units reproduced the shipped machine code of every replaced function.</summary>
public sealed record ManifestFidelity(bool Checked, int FunctionsMatched, IReadOnlyList<string> Mismatches);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(BuildManifest))]
public sealed partial class BuildManifestJson : JsonSerializerContext;
