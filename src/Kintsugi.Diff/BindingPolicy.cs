namespace Kintsugi.Diff;

/// <summary>The kernel's exported symbols reduced to what binding needs: which object exports a name.</summary>
public sealed class KernelExports
{
    private readonly IReadOnlyDictionary<string, PatchedObjectName> _exporters;

    public KernelExports(IReadOnlyDictionary<string, PatchedObjectName> exporters) => _exporters = exporters;

    /// <summary>
    /// No exports known: every reference outside the patch needs a livepatch relocation or is refused.
    /// </summary>
    public static KernelExports None { get; } = new(new Dictionary<string, PatchedObjectName>(StringComparer.Ordinal));

    public PatchedObjectName? ExporterOf(string name) =>
        _exporters.TryGetValue(name, out var exporter) ? exporter : null;
}

/// <summary>Where the symbol a reference names is defined, as the differ or the builder sees it.</summary>
public enum SymbolHome
{
    /// <summary>
    /// The livepatch module itself: new code or data, a per-use static copied into it, or another unit's new global.
    /// </summary>
    Patch,
    /// <summary>The patched unit's original compilation: a symbol of the running object, with a sympos.</summary>
    Unit,
    /// <summary>Neither: an undefined symbol of the unit, defined elsewhere in the running kernel.</summary>
    Elsewhere,
}

/// <summary>How a reference is written into the livepatch module.</summary>
public enum BindingKind
{
    /// <summary>
    /// An ordinary relocation: linked inside the module, or by the module loader against a vmlinux export.
    /// </summary>
    Normal,
    /// <summary>
    /// A livepatch relocation (<c>.klp.rela</c>), applied when <see cref="Binding.RelocationObject"/> is loaded.
    /// </summary>
    Livepatch,
    /// <summary>
    /// For a static branch or static call entry only: the entry is dropped and the site stays as compiled.
    /// </summary>
    Inert,
    /// <summary>The reference cannot be bound safely; <see cref="Binding.Reason"/> says why and what to do.</summary>
    Refused,
}

/// <summary>Which case of the policy gave an answer: one per commented branch of <see cref="BindingPolicy"/>.</summary>
public enum BindingCase
{
    InPatch, VmlinuxExport, OtherModuleExport, ModuleNotADependency, OwnModuleExport, UnitSymbol, UnexportedElsewhere,
    VmlinuxKey, VmlinuxStaticCallTrampoline, InertTracepoint, InertDebugSite, ModuleKey,
}

/// <param name="SymbolObject">
/// For a livepatch relocation, the object the symbol is looked up in (<c>.klp.sym.OBJECT.NAME,POS</c>); null when the
/// unit does not define the symbol and does not know where it lives (the builder finds it: the patched object, then
/// vmlinux).
/// </param>
/// <param name="RelocationObject">For a livepatch relocation, the object whose loading applies it
/// (<c>.klp.rela.OBJECT.SECTION</c>).</param>
public sealed record Binding(BindingKind Kind, BindingCase Case, PatchedObjectName? SymbolObject,
    PatchedObjectName? RelocationObject, string Reason);

/// <summary>The two kinds of entries whose key the kernel reads when the livepatch module loads.</summary>
public enum KeyUse { StaticBranch, StaticCall }

/// <summary>
/// The one answer to "how does the livepatch module reach this symbol": an ordinary relocation, a livepatch
/// relocation, or a refusal (and, for static branch and static call keys, an inert site). The differ asks it for the
/// keys of the special entries it keeps, the builder for every load-time reference and for what may stay undefined
/// in the linked module. Compare objtool's klp_reloc_needed() and validate_special_section_klp_reloc().
/// </summary>
/// <param name="patched">The object the unit is linked into.</param>
/// <param name="exports">Who exports what (Module.symvers).</param>
/// <param name="loadedWithPatched">
/// The modules that are always loaded when <paramref name="patched"/> is (its <c>depends</c>); null when unknown (the
/// differ does not need it). An export of any other module would be missing when the livepatch binds it.
/// </param>
public sealed class BindingPolicy(PatchedObjectName patched, KernelExports exports,
    IReadOnlySet<string>? loadedWithPatched = null)
{
    public PatchedObjectName Patched => patched;

    /// <summary>How a reference from included code to <paramref name="name"/> is bound.</summary>
    /// <param name="isLocal">The unit's own local (static) symbol: that very symbol, whatever an export of the same
    /// name.</param>
    public Binding ForReference(string name, SymbolHome home, bool isLocal = false)
    {
        // The patch defines it: the linker resolves it inside the livepatch module.
        if (home == SymbolHome.Patch) return Normal(BindingCase.InPatch, "defined in the livepatch module");

        // A static of the unit: the running object's own copy, told apart from same-named ones by its sympos.
        if (home == SymbolHome.Unit && isLocal)
            return Livepatch(BindingCase.UnitSymbol, patched, "local symbol of the unit");

        var exporter = exports.ExporterOf(name);
        // vmlinux is always there, and the module loader links its exports while the livepatch loads.
        if (exporter is { IsVmlinux: true }) return Normal(BindingCase.VmlinuxExport, "exported by vmlinux");

        if (exporter is { } module && module != patched)
        {
            // An export of another module. Linking it normally would make the livepatch depend on that module, so
            // the livepatch could not load before it (and a cumulative patch would not load at all where it is
            // absent). As a livepatch relocation of the patched object it is bound when the patched module
            // loads, and the patched module's own dependencies guarantee the exporter is loaded by then.
            if (loadedWithPatched is { } dependencies && !dependencies.Contains(module.Value))
                return Refused(BindingCase.ModuleNotADependency, $"the fixed code of {patched} uses {name}, an " +
                    $"export of module {module}, which {patched} does not depend on: when the patched module loads, " +
                    "nothing guarantees that module is loaded, so livepatch could not bind it. Reach that code " +
                    "through something the module already uses, or backport it into the patched unit.");
            return Livepatch(BindingCase.OtherModuleExport, module, "export of module " + module);
        }

        // An export of the patched module itself: that module may load after the livepatch, so the module loader
        // cannot link it; it is bound with the module, like any other symbol of it.
        if (exporter is { } own) return Livepatch(BindingCase.OwnModuleExport, own, "export of the patched module");

        // Not exported and defined by the unit: a local or unexported global of the running object, with its sympos.
        if (home == SymbolHome.Unit) return Livepatch(BindingCase.UnitSymbol, patched, "unexported symbol of the unit");

        // Not exported and not the unit's: another unit of the patched object, or (for module code) vmlinux. Where it
        // lives is looked up in the shipped objects; the relocation then belongs to whichever object that is.
        return new Binding(BindingKind.Livepatch, BindingCase.UnexportedElsewhere, null, null,
            "unexported symbol of the running kernel");
    }

    /// <summary>
    /// Where the builder found an unexported symbol the unit does not define: the relocation is applied when that
    /// object loads. A module unit's reference to vmlinux goes into a vmlinux relocation section, since the kernel
    /// refuses vmlinux symbols in a module's livepatch relocation sections.
    /// </summary>
    public Binding Located(PatchedObjectName symbolObject) =>
        Livepatch(BindingCase.UnexportedElsewhere, symbolObject, "unexported symbol of " + symbolObject);

    /// <summary>
    /// The key field of a static branch (<c>__jump_table</c>) or static call (<c>.static_call_sites</c>) entry of
    /// included code. The kernel reads the key when it initializes the livepatch module's own entries, while the
    /// module loads: before any livepatch relocation of a module object is applied.
    /// </summary>
    /// <param name="debugDescriptor">The key is a dynamic-debug descriptor's (pr_debug and friends).</param>
    public Binding ForKey(string name, SymbolHome home, KeyUse use, bool isLocal = false, bool debugDescriptor = false)
    {
        // vmlinux's own code: its keys are vmlinux symbols, bound by relocations applied while the livepatch loads.
        if (patched.IsVmlinux) return Normal(BindingCase.VmlinuxKey, "a key of vmlinux");
        var reference = ForReference(name, home, isLocal);
        // Defined in the patch (a key the fix adds, or a per-use descriptor copied into it): the kernel sets it up
        // with the livepatch's own entries. A copied pr_debug descriptor keeps working under its file and function.
        if (reference.Kind == BindingKind.Normal) return reference;
        // A key of vmlinux reached through a vmlinux livepatch relocation: applied while the livepatch loads.
        if (reference.Kind == BindingKind.Livepatch && reference.SymbolObject is { IsVmlinux: true }) return reference;

        // A static call of vmlinux that modules may call but not update (EXPORT_STATIC_CALL_TRAMP: cond_resched,
        // might_resched and preempt_schedule under PREEMPT_DYNAMIC): only its trampoline is exported, and key and
        // trampoline are defined together. As objtool wrote it for the patched module itself, the site names the
        // trampoline, and the kernel looks the key up from it while the livepatch module loads.
        if (use == KeyUse.StaticCall && home == SymbolHome.Elsewhere && exports.ExporterOf(name) is null
            && KernelNames.StaticCallTrampolineOf(name) is { } trampoline
            && exports.ExporterOf(trampoline) is { IsVmlinux: true })
            return Normal(BindingCase.VmlinuxStaticCallTrampoline,
                $"a static call of vmlinux, reached through its exported trampoline {trampoline}");

        // A key of a module (the patched one or another): its relocation would be applied after the entry was
        // initialized, patching code through a garbage key. A tracepoint is harmless to leave disabled: the site
        // keeps its compiled (off) state, as kpatch and objtool do, and the build says so.
        if (KernelNames.TracepointOf(name, use) is { } tracepoint)
            return new Binding(BindingKind.Inert, BindingCase.InertTracepoint, null, null,
                $"tracepoint {tracepoint} kept disabled");
        if (debugDescriptor)
            return new Binding(BindingKind.Inert, BindingCase.InertDebugSite, null, null,
                "dynamic debug site kept disabled");
        return Refused(BindingCase.ModuleKey, use == KeyUse.StaticBranch
            ? $"the patched code uses the static key {name} of module {patched}, which a livepatch cannot use (the " +
              "key is bound only when the module loads, after the livepatch's jump entries were set up). Test the " +
              "key with static_key_enabled() instead of a static branch."
            : $"the patched code uses the static call {name} of module {patched}, which a livepatch cannot use (the " +
              "key is bound only when the module loads, after the livepatch's static call sites were set up). Call " +
              "the function directly.");
    }

    /// <summary>
    /// Whether an undefined symbol may stay undefined in the linked livepatch module: the module loader resolves it.
    /// </summary>
    public static bool LinkedByModuleLoader(KernelExports exports, string name) =>
        exports.ExporterOf(name) is { IsVmlinux: true };

    private static Binding Normal(BindingCase @case, string reason) =>
        new(BindingKind.Normal, @case, null, null, reason);

    private Binding Livepatch(BindingCase @case, PatchedObjectName symbolObject, string reason) =>
        new(BindingKind.Livepatch, @case, symbolObject, symbolObject.IsVmlinux ? symbolObject : patched, reason);

    private static Binding Refused(BindingCase @case, string reason) =>
        new(BindingKind.Refused, @case, null, null, reason);
}
