using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi;

/// <summary>
/// The patch state of one machine, the single vocabulary shared by the runtime, agent, server, CLI and
/// dashboard. Its wire form is the kebab-case name (<see cref="PatchStates.ToWire"/>).
/// </summary>
[JsonConverter(typeof(PatchStateJsonConverter))]
public enum PatchState
{
    NothingToApply,
    Applying,
    Applied,
    ApplyFailed,
    AppliedWithBug,
    KernelUnsupported,
    Revoked,
    Disabled,
}

public static class PatchStates
{
    private static readonly (PatchState State, string Wire)[] Names =
    [
        (PatchState.NothingToApply, "nothing-to-apply"),
        (PatchState.Applying, "applying"),
        (PatchState.Applied, "applied"),
        (PatchState.ApplyFailed, "apply-failed"),
        (PatchState.AppliedWithBug, "applied-with-bug"),
        (PatchState.KernelUnsupported, "kernel-unsupported"),
        (PatchState.Revoked, "revoked"),
        (PatchState.Disabled, "disabled"),
    ];

    public static string ToWire(this PatchState state)
    {
        foreach (var (s, wire) in Names) if (s == state) return wire;
        throw new ArgumentOutOfRangeException(nameof(state), state, null);
    }

    public static PatchState Parse(string wire)
    {
        foreach (var (s, name) in Names) if (name == wire) return s;
        throw new FormatException($"'{wire}' is not a patch state; known: " +
            $"{string.Join(", ", Names.Select(n => n.Wire))}");
    }

    public static IEnumerable<string> All => Names.Select(n => n.Wire);
}

/// <summary>Reads and writes a <see cref="PatchState"/> as its wire name (<c>applied-with-bug</c>).</summary>
public sealed class PatchStateJsonConverter : JsonConverter<PatchState>
{
    public override PatchState Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        PatchStates.Parse(reader.GetString() ?? throw new JsonException("a patch state is null"));

    public override void Write(Utf8JsonWriter writer, PatchState value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToWire());
}
