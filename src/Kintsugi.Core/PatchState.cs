namespace Kintsugi;

/// <summary>
/// The patch state of one machine, the single vocabulary shared by the runtime, agent, server, CLI and
/// dashboard. Its wire form is the kebab-case name (<see cref="PatchStates.ToWire"/>).
/// </summary>
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
        throw new FormatException($"'{wire}' is not a patch state; known: {string.Join(", ", Names.Select(n => n.Wire))}");
    }

    public static IEnumerable<string> All => Names.Select(n => n.Wire);
}
