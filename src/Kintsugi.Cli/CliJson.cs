using System.Text.Json.Serialization;
using Kintsugi.Kernel;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;

namespace Kintsugi.Cli;

/// <summary>Everything a read command prints with --json.</summary>
public sealed record ModuleInfo(string Name, string? Path, bool Livepatch, string? Vermagic, string? BuildId,
    string? Sha256, bool Loaded, bool? Enabled, IReadOnlyDictionary<string, string> ModInfo,
    IReadOnlyList<PatchedObject> Objects);

/// <summary>kernel prepare --json.</summary>
public sealed record PreparedTree(string Release, string BuildId, string Directory);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(MachineStatus))]
[JsonSerializable(typeof(IReadOnlyList<LoadedPatch>))]
[JsonSerializable(typeof(ModuleInfo))]
[JsonSerializable(typeof(FetchedKernel))]
[JsonSerializable(typeof(IReadOnlyList<AvailableKernel>))]
[JsonSerializable(typeof(BootResult))]
[JsonSerializable(typeof(PreparedTree))]
[JsonSerializable(typeof(KernelBuildResult))]
[JsonSerializable(typeof(DiffReport))]
[JsonSerializable(typeof(Kintsugi.Lab.PatchTestResult))]
[JsonSerializable(typeof(KeyListing))]
[JsonSerializable(typeof(IReadOnlyList<KeyListing>))]
internal sealed partial class CliJson : JsonSerializerContext;
