using Kintsugi.Kernel.Build.Symbols;

namespace Kintsugi.Kernel.Build.Livepatch;

/// <summary>One function the patch replaces: the original by name and sympos, and the global symbol of its replacement
/// in a diff object.</summary>
public sealed record KlpFunction(string OldName, Sympos OldSympos, string NewSymbol);

/// <summary>The global symbols of a patched object's callbacks in the diff objects (kpatch-macros.h conventions), if
/// any.</summary>
public sealed record KlpCallbacks(string? PrePatch = null, string? PostPatch = null, string? PreUnpatch = null,
    string? PostUnpatch = null)
{
    public static KlpCallbacks None { get; } = new();
    public bool Any =>
        PrePatch is not null || PostPatch is not null || PreUnpatch is not null || PostUnpatch is not null;
}

/// <summary>An object of the running kernel the patch changes: <c>vmlinux</c> or a module name.</summary>
/// <param name="Callbacks">
/// The callbacks of each translation unit that has any, in unit order. livepatch takes one callback of each
/// kind per object, so several units' callbacks are chained: patching callbacks run in unit order, unpatching
/// ones in reverse, and a refusing pre-patch callback undoes the units before it with their post-unpatch callbacks.
/// </param>
public sealed record KlpObject(string Name, IReadOnlyList<KlpFunction> Functions, IReadOnlyList<KlpCallbacks> Callbacks)
{
    public KlpObject(string name, IReadOnlyList<KlpFunction> functions, KlpCallbacks callbacks)
        : this(name, functions, callbacks.Any ? [callbacks] : []) { }

    public bool IsVmlinux => Name == KernelObjectNames.Vmlinux;
}

/// <summary>Everything needed to generate, link and finish one livepatch module.</summary>
/// <param name="ModuleName">The module's name, which is also its /sys/kernel/livepatch directory.</param>
/// <param name="DiffObjects">The differ's output objects, one per changed translation unit.</param>
/// <param name="Bindings">The undefined symbols of the diff objects that livepatch must bind.</param>
/// <param name="Manifest">The manifest, embedded in the module's <c>.kintsugi.manifest</c> section.</param>
public sealed record LivepatchModuleSpec(
    string ModuleName,
    string Description,
    IReadOnlyList<KlpObject> Objects,
    IReadOnlyList<string> DiffObjects,
    IReadOnlyList<KlpSymbolBinding> Bindings,
    byte[] Manifest,
    string? EffectiveVersion,
    bool Replace = true);
