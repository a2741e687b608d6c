using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Bundles;

/// <summary>
/// What a bundle says about its module: the exact kernel build it targets, its cumulative level, every
/// fix it contains, the functions it replaces, the module's size and SHA-256, and who published it when.
/// The envelope's signature covers the canonical JSON of this record, so every field is authenticated.
/// </summary>
public sealed record BundleManifest
{
    /// <summary>
    /// The one kernel build the module may be loaded into (release and GNU build-id); absent (null) in a user-space
    /// bundle, which names its <see cref="Object"/> instead.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public KernelTarget? Target { get; init; }

    /// <summary>
    /// A user-space bundle's target: the one ELF object (executable or shared library, by GNU build-id) whose
    /// functions the patch replaces in running processes. Absent in kernel bundles, whose bytes are unchanged by it.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ObjectTarget? Object { get; init; }

    /// <summary>The cumulative level for this kernel build (1, 2, ...); level N contains every fix of levels below
    /// it.</summary>
    public required int CumulativeLevel { get; init; }

    /// <summary>Every fix this module contains, cumulatively.</summary>
    public required IReadOnlyList<BundleFix> Fixes { get; init; }

    /// <summary>The functions the module replaces.</summary>
    public required IReadOnlyList<PatchedFunction> PatchedFunctions { get; init; }

    public required long ModuleSize { get; init; }

    public required Sha256Digest ModuleSha256 { get; init; }

    /// <summary>The key that signed this manifest (it must also be the key named in the signature block).</summary>
    public required PublisherKeyId PublisherKeyId { get; init; }

    /// <summary>When the bundle was signed, in UTC.</summary>
    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>The version of the Kintsugi builder that produced the module.</summary>
    public required string BuilderVersion { get; init; }

    /// <summary>
    /// Optional: the distribution package version this patch level makes the kernel equivalent to
    /// (for scanners and <c>status</c>), for example <c>6.1.158-1</c>.
    /// </summary>
    public string? EffectivePackageVersion { get; init; }

    /// <summary>What the module is: a kernel livepatch (.ko) or a user-space patch (kintsugi-user-patch
    /// JSON).</summary>
    [JsonIgnore]
    public BundleKind Kind => Object is null ? BundleKind.Kernel : BundleKind.User;

    /// <summary>The build-id of what the module patches: the kernel's or the object's.</summary>
    [JsonIgnore]
    public BuildId TargetBuildId => Object?.BuildId ?? Target!.BuildId;

    /// <summary>For messages: the kernel release, or the object's file name.</summary>
    [JsonIgnore]
    public string TargetName => Object?.Name ?? Target!.Release.Value;

    /// <summary>Every CVE the bundle fixes, once each.</summary>
    [JsonIgnore]
    public IEnumerable<CveId> Cves => Fixes.SelectMany(f => f.Cves).Select(c => c.Id).Distinct();
}

/// <summary>The two kinds of bundle; the manifest says which by carrying a kernel <c>target</c> or an
/// <c>object</c>.</summary>
public enum BundleKind
{
    Kernel,
    User,
}

/// <summary>
/// The ELF object a user-space bundle patches: its file name as installed (for messages and reports, for example
/// <c>libcrypto.so.3</c> or <c>postgres</c>), its GNU build-id (the identity: the agent patches only processes that
/// map an object with exactly this build-id), and, when known, the distribution package and version that ship it.
/// </summary>
public sealed record ObjectTarget(string Name, BuildId BuildId, string? Package = null, string? PackageVersion = null)
{
    public override string ToString() =>
        (Package is null ? Name : $"{Name} ({Package}{(PackageVersion is null ? "" : " " + PackageVersion)})") + $" " +
        $"build-id {BuildId}";
}

/// <summary>One fix contained in a bundle.</summary>
/// <param name="Id">A stable identifier chosen by the patch engineer (letters, digits, <c>.-_:</c>), for example an
/// upstream commit or <c>CVE-2024-1086</c>.</param>
public sealed record BundleFix(string Id, IReadOnlyList<CveReference> Cves, string Description);

/// <summary>A CVE a fix addresses, with its severity and publication date.</summary>
public sealed record CveReference(CveId Id, CveSeverity Severity, DateOnly Published);

[JsonConverter(typeof(JsonStringEnumConverter<CveSeverity>))]
public enum CveSeverity
{
    [JsonStringEnumMemberName("none")] None,
    [JsonStringEnumMemberName("low")] Low,
    [JsonStringEnumMemberName("medium")] Medium,
    [JsonStringEnumMemberName("high")] High,
    [JsonStringEnumMemberName("critical")] Critical,
}

/// <summary>A function the module replaces: the object it lives in (<c>vmlinux</c> or a module name) and its
/// name.</summary>
public sealed record PatchedFunction(string Object, string Function);

/// <summary>
/// What the patch engineer states about a module before signing; <see cref="Bundle.Create"/> adds the
/// module's size and digest and the signing key's id to make the <see cref="BundleManifest"/>.
/// </summary>
public sealed record BundleDescription
{
    /// <summary>The kernel build (a kernel livepatch); null for a user-space patch.</summary>
    public KernelTarget? Target { get; init; }
    /// <summary>The ELF object (a user-space patch); null for a kernel livepatch.</summary>
    public ObjectTarget? Object { get; init; }
    public required int CumulativeLevel { get; init; }
    public required IReadOnlyList<BundleFix> Fixes { get; init; }
    public required IReadOnlyList<PatchedFunction> PatchedFunctions { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public required string BuilderVersion { get; init; }
    public string? EffectivePackageVersion { get; init; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    WriteIndented = false,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true,
    AllowDuplicateProperties = false)]
[JsonSerializable(typeof(BundleManifest))]
internal sealed partial class BundleJson : JsonSerializerContext;

/// <summary>Canonical serialization and validation of manifests.</summary>
internal static class ManifestCodec
{
    public const int MaxFixes = 10_000;
    public const int MaxCvesPerFix = 1_000;
    public const int MaxPatchedFunctions = 100_000;

    public static byte[] Serialize(BundleManifest manifest) =>
        JsonSerializer.SerializeToUtf8Bytes(manifest, BundleJson.Default.BundleManifest);

    /// <summary>Parses, validates, and refuses any byte form other than the canonical one.</summary>
    public static BundleManifest Parse(ReadOnlySpan<byte> json)
    {
        BundleManifest? manifest;
        try { manifest = JsonSerializer.Deserialize(json, BundleJson.Default.BundleManifest); }
        catch (Exception e) when (e is JsonException or FormatException or ArgumentException
            or InvalidOperationException or OverflowException)
        {
            throw Invalid($"the manifest is not valid: {Describe(e)}", e);
        }
        if (manifest is null) throw Invalid("the manifest is JSON null");
        Validate(manifest);
        if (!json.SequenceEqual(Serialize(manifest)))
            throw Invalid("the manifest is not in canonical form (compact JSON, fields in the documented order, no " +
                "extra whitespace, UTC time); re-create the bundle with `kintsugi bundle sign`");
        return manifest;
    }

    private static string Describe(Exception e) =>
        e.InnerException is FormatException inner ? $"{e.Message} ({inner.Message})" : e.Message;

    public static void Validate(BundleManifest m)
    {
        if (m.Target is not null && m.Object is not null)
            throw Invalid(
                "the manifest names both a target kernel and a target object; a bundle patches one or the other");
        if (m.Object is { } o)
        {
            if (o.BuildId.ToString().Length == 0) throw Invalid("the manifest's target object has no build-id");
            CheckIdentifier("target object name", o.Name, 64);
            if (o.Package is not null) CheckIdentifier("target object package", o.Package, 128);
            if (o.PackageVersion is not null) CheckText("object.packageVersion", o.PackageVersion, 128);
        }
        else
        {
            if (m.Target is null || m.Target.Release.Value is null || m.Target.BuildId.ToString().Length == 0)
                throw Invalid(
                    "the manifest names no target kernel (release and build-id are required) nor a target object");
            if (m.Target.PackageVersion is not null) CheckText("target.packageVersion", m.Target.PackageVersion, 128);
        }
        if (m.CumulativeLevel < 1) throw Invalid($"cumulative level {m.CumulativeLevel} is not a positive integer");
        if (m.Fixes is null || m.Fixes.Count == 0)
            throw Invalid("the manifest lists no fixes; a bundle contains at least one");
        if (m.Fixes.Count > MaxFixes) throw Invalid($"the manifest lists {m.Fixes.Count} fixes (at most {MaxFixes})");
        var fixIds = new HashSet<string>(StringComparer.Ordinal);
        foreach (var fix in m.Fixes)
        {
            if (fix is null) throw Invalid("a fix is null");
            CheckIdentifier("fix id", fix.Id, 128);
            if (!fixIds.Add(fix.Id)) throw Invalid($"fix '{fix.Id}' is listed twice");
            CheckText($"description of fix '{fix.Id}'", fix.Description, 4096, allowNewlines: true);
            if (fix.Cves is null) throw Invalid($"fix '{fix.Id}' has no CVE list (use an empty list)");
            if (fix.Cves.Count > MaxCvesPerFix)
                throw Invalid($"fix '{fix.Id}' lists {fix.Cves.Count} CVEs (at most {MaxCvesPerFix})");
            var cves = new HashSet<string>(StringComparer.Ordinal);
            foreach (var cve in fix.Cves)
            {
                if (cve is null || cve.Id.Value is null) throw Invalid($"fix '{fix.Id}' has an empty CVE entry");
                if (!cves.Add(cve.Id.Value)) throw Invalid($"fix '{fix.Id}' lists {cve.Id} twice");
                if (!Enum.IsDefined(cve.Severity)) throw Invalid($"{cve.Id} has an unknown severity");
            }
        }
        if (m.PatchedFunctions is null || m.PatchedFunctions.Count == 0)
            throw Invalid("the manifest lists no patched functions; a livepatch replaces at least one");
        if (m.PatchedFunctions.Count > MaxPatchedFunctions) throw Invalid($"the manifest lists " +
            $"{m.PatchedFunctions.Count} patched functions (at most {MaxPatchedFunctions})");
        var functions = new HashSet<(string, string)>();
        foreach (var f in m.PatchedFunctions)
        {
            if (f is null) throw Invalid("a patched function is null");
            CheckIdentifier("patched object", f.Object, 64);
            CheckIdentifier($"patched function in {f.Object}", f.Function, 256);
            if (!functions.Add((f.Object, f.Function)))
                throw Invalid($"patched function {f.Object}:{f.Function} is listed twice");
        }
        if (m.ModuleSize is < 1 or > Bundle.MaxModuleLength)
            throw Invalid($"module size {m.ModuleSize} is out of range (1 to {Bundle.MaxModuleLength})");
        if (m.ModuleSha256.IsEmpty) throw Invalid("the manifest has no module digest");
        if (m.PublisherKeyId.IsEmpty) throw Invalid("the manifest names no publisher key");
        if (m.CreatedAt.Offset != TimeSpan.Zero) throw Invalid("the creation time must be in UTC");
        CheckText("builder version", m.BuilderVersion, 64);
        if (m.EffectivePackageVersion is not null)
            CheckText("effective package version", m.EffectivePackageVersion, 128);
    }

    /// <summary>Letters, digits and <c>._-:+~</c>.</summary>
    private static void CheckIdentifier(string what, string? value, int maxLength)
    {
        if (string.IsNullOrEmpty(value)) throw Invalid($"the {what} is empty");
        if (value.Length > maxLength) throw Invalid($"the {what} is longer than {maxLength} characters");
        foreach (var c in value)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or ':' or '+' or '~'))
                throw Invalid($"the {what} '{value}' contains '{c}' (allowed: letters, digits and . _ - : + ~)");
    }

    private static void CheckText(string what, string? value, int maxLength, bool allowNewlines = false)
    {
        if (string.IsNullOrWhiteSpace(value)) throw Invalid($"the {what} is empty");
        if (value.Length > maxLength) throw Invalid($"the {what} is longer than {maxLength} characters");
        foreach (var c in value)
            if (char.IsControl(c) && !(allowNewlines && c == '\n'))
                throw Invalid($"the {what} contains a control character (U+{(int)c:X4})");
    }

    private static BundleException Invalid(string message, Exception? inner = null) =>
        new(BundleFailure.InvalidManifest, message, inner);
}
