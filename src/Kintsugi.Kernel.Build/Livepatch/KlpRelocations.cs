using Kintsugi.Elf;
using Kintsugi.Kernel.Build.Symbols;

namespace Kintsugi.Kernel.Build.Livepatch;

/// <summary>
/// A reference from patch code to a symbol the module loader cannot resolve (a local or unexported symbol of
/// the running kernel, or any symbol of a patched module that may load later): in the linked module it is an
/// undefined symbol named <see cref="UndefinedName"/>, to be bound by livepatch to <see cref="Name"/> at
/// <see cref="Sympos"/> in <see cref="Object"/>, by a relocation applied when <see cref="RelocationObject"/> loads.
/// </summary>
/// <param name="RelocationObject">
/// The object whose loading applies the relocations (<c>.klp.rela.OBJECT.SECTION</c>): the patched module for a
/// symbol of another module (loaded as its dependency), else <see cref="Object"/> itself. Null means <see
/// cref="Object"/>.
/// </param>
public sealed record KlpSymbolBinding(string UndefinedName, string Object, string Name, Sympos Sympos,
    string? RelocationObject = null)
{
    public string AppliedWith => RelocationObject ?? Object;

    /// <summary>The livepatch symbol name: <c>.klp.sym.objname.symbol_name,sympos</c>.</summary>
    public string LivepatchSymbolName => $".klp.sym.{Object}.{Name},{Sympos}";
}

/// <summary>
/// Rewrites a linked livepatch module so that every relocation against a bound symbol lives in a livepatch
/// relocation section (<c>.klp.rela.objname.section</c>, SHF_ALLOC | SHF_RELA_LIVEPATCH) against an
/// SHN_LIVEPATCH symbol, as kernel Documentation/livepatch/module-elf-format.rst requires. Done after
/// kbuild links the module because a relocatable link would merge such sections into ordinary ones.
/// </summary>
public static class KlpRelocations
{
    public static int Convert(ElfObject module, IReadOnlyList<KlpSymbolBinding> bindings)
    {
        var symbolTable = module.SymbolTable
            ?? throw new ModuleBuildException("the linked livepatch module has no symbol table");
        var byName = bindings.ToDictionary(b => b.UndefinedName, StringComparer.Ordinal);
        var livepatchSymbols = new Dictionary<string, ElfSymbol>(StringComparer.Ordinal);
        var klpSections = new Dictionary<(string Object, ElfSection Target), ElfRelocationSection>();
        var converted = 0;
        foreach (var relocations in module.Sections.OfType<ElfRelocationSection>().ToList())
        {
            if (relocations.Flags.HasFlag(ElfSectionFlags.RelaLivepatch) || relocations.Target is not { } target)
                continue;
            var moved = new List<ElfRelocation>();
            foreach (var relocation in relocations.Relocations)
            {
                if (relocation.Symbol is not { IsUndefined: true } symbol
                    || !byName.TryGetValue(symbol.Name, out var binding)) continue;
                moved.Add(relocation);
                // Debug information is never loaded; its references to bound symbols are simply dropped.
                if (!target.Flags.HasFlag(ElfSectionFlags.Alloc)) continue;
                if (!livepatchSymbols.TryGetValue(binding.LivepatchSymbolName, out var livepatchSymbol))
                {
                    livepatchSymbol = new ElfSymbol(binding.LivepatchSymbolName)
                    {
                        Binding = ElfSymbolBinding.Global,
                        Type = symbol.Type,
                        SpecialSection = ElfSpecialSectionIndex.Livepatch,
                    };
                    symbolTable.Symbols.Add(livepatchSymbol);
                    livepatchSymbols[binding.LivepatchSymbolName] = livepatchSymbol;
                }
                if (!klpSections.TryGetValue((binding.AppliedWith, target), out var klp))
                {
                    klp = new ElfRelocationSection($".klp.rela.{binding.AppliedWith}.{target.Name}", target,
                        symbolTable)
                    {
                        Flags = ElfSectionFlags.Alloc | ElfSectionFlags.InfoLink | ElfSectionFlags.RelaLivepatch,
                        Alignment = 8,
                    };
                    module.Sections.Add(klp);
                    klpSections[(binding.AppliedWith, target)] = klp;
                }
                klp.Relocations.Add(
                    new ElfRelocation(relocation.Offset, relocation.Type, livepatchSymbol, relocation.Addend));
                converted++;
            }
            foreach (var relocation in moved) relocations.Relocations.Remove(relocation);
        }
        var bound = symbolTable.Symbols.Where(s => s.IsUndefined && byName.ContainsKey(s.Name)).ToList();
        foreach (var symbol in bound) symbolTable.Symbols.Remove(symbol);
        return converted;
    }
}
