using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.User;

/// <summary>What a relocation's symbol value is relative to.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<RelocationBase>))]
public enum RelocationBase
{
    /// <summary>An offset in the patch's own code, wherever the region is mapped.</summary>
    Patch,
    /// <summary>A virtual address in the target object, wherever the process loaded it.</summary>
    Object,
    /// <summary>A dynamic symbol, by name, of the objects the process has loaded (in load order).</summary>
    Import,
}

/// <summary>How a relocation is written.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<RelocationKind>))]
public enum RelocationKind
{
    /// <summary>S + A, 8 bytes.</summary>
    Absolute64,
    /// <summary>S + A - P, 4 bytes signed: the region must be within ±2 GiB of S.</summary>
    Relative32,
}

/// <summary>One place in the patch code to fill in once the process's addresses are known.</summary>
public sealed record
    PatchRelocation(uint Offset, RelocationKind Kind, RelocationBase Base, ulong Value, string? Symbol, long Addend);

/// <summary>
/// A function of the target object that the patch replaces: where it is (virtual address and size in the
/// object), what its shipped code is (SHA-256 of its bytes, checked in the process before anything is
/// written), and where its replacement starts in the patch code.
/// </summary>
public sealed record ReplacedFunction(string Name, ulong Address, uint Size, string OriginalSha256, uint Replacement);

/// <summary>The exact object a patch is for: its GNU build-id, and the file name it usually has (for
/// messages).</summary>
public sealed record PatchTarget(BuildId BuildId, string Object);

/// <summary>
/// A user-space patch: position-independent replacement code for functions of one ELF object, and the
/// relocations that bind it to the process it is applied to. Built by <c>kintsugi user build</c> (the build
/// side), read here; the file is JSON (docs/user-patch-format.md).
/// </summary>
public sealed record UserPatch(string Format, string Name, string? Description, PatchTarget Target,
    IReadOnlyList<ReplacedFunction> Functions, byte[] Code, IReadOnlyList<PatchRelocation> Relocations)
{
    public const string CurrentFormat = "kintsugi-user-patch/1";
    /// <summary>A 5-byte <c>jmp rel32</c> redirects each function, so a shorter function cannot be patched.</summary>
    public const int RedirectSize = 5;
    public const int MaxFunctions = 120;
    public const int MaxNameLength = 63;

    private byte[]? _id;

    /// <summary>SHA-256 of the patch's canonical form: how a patch is recognised in a process's memory.</summary>
    [JsonIgnore]
    public ReadOnlySpan<byte> Id => _id ??=
        SHA256.HashData(JsonSerializer.SerializeToUtf8Bytes(this, UserPatchJson.Default.UserPatch));

    [JsonIgnore]
    public string IdHex => Convert.ToHexStringLower(Id);

    public static UserPatch Load(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserPatchException($"cannot read the patch {path}: {e.Message}", ExitCode.NotFound, e);
        }
        return Parse(bytes, path);
    }

    public static UserPatch Parse(ReadOnlySpan<byte> json, string origin)
    {
        UserPatch? patch;
        try { patch = JsonSerializer.Deserialize(json, UserPatchJson.Default.UserPatch); }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new UserPatchException($"{origin} is not a user-space patch: {e.Message}", ExitCode.InputRefused, e);
        }
        if (patch is null) throw new UserPatchException($"{origin} is not a user-space patch (empty)");
        patch.Validate(origin);
        return patch;
    }

    public void Save(string path)
    {
        Validate(path);
        File.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(this, UserPatchJson.Default.UserPatch));
    }

    private void Validate(string origin)
    {
        void Refuse(string why) => throw new UserPatchException($"{origin} is not a valid user-space patch: {why}");
        if (Format != CurrentFormat) Refuse($"format '{Format}' is not {CurrentFormat} (a newer kintsugi may read it)");
        if (string.IsNullOrEmpty(Name) || Name.Length > MaxNameLength || Name.Any(c => c is < ' ' or > '~'))
            Refuse("the name must be 1 to 63 printable ASCII characters");
        if (Target is null || Target.BuildId.ToString().Length == 0) Refuse("no target build-id");
        if (Code is null || Code.Length == 0 || Code.Length > 64 << 20) Refuse("the code must be 1 byte to 64 MiB");
        if (Functions is null || Functions.Count is 0 or > MaxFunctions)
            Refuse($"it must replace 1 to {MaxFunctions} functions");
        foreach (var f in Functions!)
        {
            if (f.Size < RedirectSize)
                Refuse($"{f.Name} is {f.Size} bytes, shorter than the {RedirectSize}-byte jump that redirects it");
            if ((ulong)f.Replacement + RedirectSize > (ulong)Code!.Length)
                Refuse($"the replacement of {f.Name} lies outside the code");
            if (f.OriginalSha256 is not { Length: 64 }) Refuse($"{f.Name} has no SHA-256 of its original code");
        }
        if (Functions!.Select(f => f.Address).Distinct().Count() != Functions!.Count)
            Refuse("a function is replaced twice");
        if (Relocations is null) Refuse("no relocation list");
        foreach (var r in Relocations!)
        {
            var width = r.Kind == RelocationKind.Absolute64 ? 8UL : 4UL;
            if (r.Offset + width > (ulong)Code!.Length) Refuse($"a relocation at 0x{r.Offset:x} lies outside the code");
            if (r.Base == RelocationBase.Import && string.IsNullOrEmpty(r.Symbol))
                Refuse($"the import at 0x{r.Offset:x} names no symbol");
            if (r.Base == RelocationBase.Patch && r.Value > (ulong)Code!.Length)
                Refuse($"the relocation at 0x{r.Offset:x} points outside the code");
        }
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(UserPatch))]
internal sealed partial class UserPatchJson : JsonSerializerContext;
