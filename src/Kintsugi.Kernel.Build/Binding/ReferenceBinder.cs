using Kintsugi.Diff;
using Kintsugi.Elf;
using Kintsugi.Kernel.Build.Livepatch;
using Kintsugi.Kernel.Build.Phases;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Kernel.Build.Units;

namespace Kintsugi.Kernel.Build.Binding;

/// <summary>
/// Carries out the <see cref="BindingPolicy"/>'s answer for each load-time reference of one unit: nothing for an
/// ordinary relocation, the running symbol (object, name, sympos, found in the shipped objects) for a livepatch
/// relocation, and a <see cref="LivepatchRefusedException"/> for a refusal.
/// </summary>
public sealed class ReferenceBinder(TranslationUnit unit, BindingPolicy policy, SymbolResolver resolver,
    IReadOnlySet<string> patchDefines, Func<string, Task<ShippedObject>> shippedAsync)
{
    /// <summary>The policy for a unit: its object's exports and, for a module, the modules it depends on.</summary>
    public static BindingPolicy PolicyFor(TranslationUnit unit, ModuleSymvers exports, ShippedObject patchedObject) =>
        new(PatchedObjectName.Parse(unit.PatchedObject), exports.Exports, patchedObject.Dependencies);

    /// <summary>
    /// Whether kbuild runs objtool over a linked module rather than over each object (the kernel's delay-objtool:
    /// IBT or clang LTO), read from the configuration the module is built against.
    /// </summary>
    public static bool ObjtoolRunsAtModuleLink(string buildDirectory)
    {
        var autoconf = Path.Combine(buildDirectory, "include", "config", "auto.conf");
        return File.Exists(autoconf)
            && File.ReadLines(autoconf).Any(l => l is "CONFIG_X86_KERNEL_IBT=y" or "CONFIG_LTO_CLANG=y");
    }

    /// <summary>The global symbols the differ's outputs define (new functions and data): other units link to them
    /// inside the module.</summary>
    public static IReadOnlySet<string> DefinedByPatch(IEnumerable<ElfObject> outputs) =>
        outputs.SelectMany(o => o.SymbolTable?.Symbols ?? Enumerable.Empty<ElfSymbol>())
            .Where(s => s.Section is not null && s.Binding != ElfSymbolBinding.Local && s.Name.Length > 0)
            .Select(s => s.Name).ToHashSet(StringComparer.Ordinal);

    /// <summary>The livepatch binding of <paramref name="reference"/>, or null when an ordinary relocation
    /// does.</summary>
    public async Task<ResolvedBinding?> BindAsync(LoadTimeReference reference)
    {
        var home = reference.DefinedInUnit ? SymbolHome.Unit
            : patchDefines.Contains(reference.TargetName) ? SymbolHome.Patch : SymbolHome.Elsewhere;
        var binding = policy.ForReference(reference.TargetName, home, reference.IsLocal);
        switch (binding.Kind)
        {
            case BindingKind.Normal:
                return null;
            case BindingKind.Refused:
                throw new LivepatchRefusedException(
                    $"this fix cannot be live patched safely:\n  {unit.SourcePath}: {reference.TargetName}: " +
                    $"{binding.Reason}");
        }
        if (binding.SymbolObject is { } symbolObject)
            return Bound(reference, binding, await ResolveInAsync(symbolObject, reference.TargetName));

        // Not exported and not the unit's own: another unit of the patched object has it, or (for module code) vmlinux.
        foreach (var candidate in policy.Patched.IsVmlinux ? [policy.Patched]
            : new[] { policy.Patched, PatchedObjectName.Vmlinux })
        {
            var shipped = await shippedAsync(candidate.Value);
            if (shipped.Symbols.Named(reference.TargetName).Count > 0)
                return Bound(reference, policy.Located(candidate),
                    new SymbolResolver(shipped, new ElfObject()).Resolve(reference.TargetName));
        }
        throw new LivepatchRefusedException(
            $"{unit.SourcePath}: the fixed code references {reference.TargetName}, which the running kernel " +
            $"neither exports nor has in {unit.PatchedObject}, and no other unit of this patch defines; it may be " +
            $"new in the fix's kernel " +
            "version: backport it into the patched unit as a static function", missingSymbol: reference.TargetName);
    }

    /// <summary>The unit's own object is resolved through the unit's compiled original (sympos by code or layout);
    /// others by name.</summary>
    private async Task<ResolvedSymbol> ResolveInAsync(PatchedObjectName symbolObject, string name) =>
        symbolObject == policy.Patched ? resolver.Resolve(name)
            : new SymbolResolver(await shippedAsync(symbolObject.Value), new ElfObject()).Resolve(name);

    private static ResolvedBinding Bound(LoadTimeReference reference, Diff.Binding binding, ResolvedSymbol resolved) =>
        new(new KlpSymbolBinding(reference.OutputName, resolved.Object, resolved.Name, resolved.Sympos,
            binding.RelocationObject?.Value),
            new ManifestSymbol(resolved.Object, resolved.Name, resolved.Sympos.Value, resolved.Method.ToString(),
                Describe(reference, binding)));

    /// <summary>The manifest's words for how a symbol is bound (kept as earlier builds wrote them where they
    /// apply).</summary>
    private static string Describe(LoadTimeReference reference, Diff.Binding binding) => binding.Case switch
    {
        BindingCase.UnitSymbol when reference.IsLocal => "local",
        BindingCase.OwnModuleExport or BindingCase.OtherModuleExport => binding.Reason,
        _ => "unexported",
    };
}
