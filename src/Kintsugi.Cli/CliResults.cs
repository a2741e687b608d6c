using System.Text.Json.Serialization;

namespace Kintsugi.Cli;

/// <summary>
/// What a command that changes state prints with --json. Every one has <c>changed</c>: whether the machine
/// is different afterwards (false when it already was as asked, which is a success).
/// </summary>
public sealed record PatchChange(bool Changed, string Action, string Patch, IReadOnlyList<string> Replaced,
    bool Forced = false, string? Directory = null);

/// <summary>kernel unload --all --json: what was removed and what could not be.</summary>
public sealed record UnloadAllResult(bool Changed, IReadOnlyList<string> Removed, IReadOnlyList<UnloadFailure> Failed);

public sealed record UnloadFailure(string Patch, int ExitCode, string Message);

/// <summary>disable/enable --json: the kill switch afterwards.</summary>
public sealed record KillSwitchResult(bool Changed, bool Enabled, string? DisabledBecause, string File,
    IReadOnlyList<string> Unloaded);

/// <summary>agent install/uninstall, keys trust/retire --json: one file or unit written or removed.</summary>
public sealed record FileChange(bool Changed, string Action, string Subject, string? Path);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(PatchChange))]
[JsonSerializable(typeof(UnloadAllResult))]
[JsonSerializable(typeof(KillSwitchResult))]
[JsonSerializable(typeof(FileChange))]
[JsonSerializable(typeof(Kintsugi.Agent.AgentCheckResult))]
[JsonSerializable(typeof(EnrollResult))]
internal sealed partial class ChangeJson : JsonSerializerContext;
