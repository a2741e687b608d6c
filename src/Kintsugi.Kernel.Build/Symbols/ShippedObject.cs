using Kintsugi.Elf;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>
/// One object of the running kernel as shipped: vmlinux (kallsyms plus the boot image's bytes) or a module
/// (its .ko file). It answers what the builder must know about the code it is about to patch: which
/// symbols exist, in which order, and what bytes they hold.
/// </summary>
public abstract class ShippedObject
{
    public abstract string Name { get; }
    public abstract KernelSymbolTable Symbols { get; }

    /// <summary>The shipped bytes of a symbol, or null when they cannot be read.</summary>
    public abstract ReadOnlyMemory<byte>? Read(KernelSymbol symbol, int length);

    /// <summary>The modules always loaded while this object is (a module's <c>depends</c>; none for vmlinux).</summary>
    public virtual IReadOnlySet<string> Dependencies { get; } = new HashSet<string>(StringComparer.Ordinal);
}

public sealed class ShippedVmlinux(KernelSymbolTable symbols, VmlinuxImage image) : ShippedObject
{
    public override string Name => KernelObjectNames.Vmlinux;
    public override KernelSymbolTable Symbols => symbols;
    public override ReadOnlyMemory<byte>? Read(KernelSymbol symbol, int length) => image.Read(symbol.Address, length);
}

/// <summary>
/// A shipped module. Symbols keep the .ko symbol table's order (the order the module loader keeps and
/// livepatch counts in); their addresses are synthetic, section index in the high half and offset in the
/// low half, so that neighbours in a section stay neighbours.
/// </summary>
public sealed class ShippedModule : ShippedObject
{
    private readonly ElfObject _module;

    public override string Name { get; }
    public override KernelSymbolTable Symbols { get; }

    public ShippedModule(string name, ElfObject module)
    {
        Name = name;
        _module = module;
        var symbols = new List<KernelSymbol>();
        foreach (var symbol in module.SymbolTable?.Symbols ?? Enumerable.Empty<ElfSymbol>())
        {
            if (symbol.Section is null || symbol.Type is not (ElfSymbolType.Function or ElfSymbolType.Object)
                || symbol.Name.Length == 0) continue;
            var type = symbol.Type == ElfSymbolType.Function ? 't' : 'd';
            symbols.Add(new KernelSymbol(((ulong)symbol.Section.Index << 32) | symbol.Value,
                symbol.Binding == ElfSymbolBinding.Local ? type : char.ToUpperInvariant(type), symbol.Name));
        }
        Symbols = new KernelSymbolTable(name, SymbolTableSource.ModuleFile, symbols);
        Dependencies = ReadDependencies(module);
    }

    public override IReadOnlySet<string> Dependencies { get; }

    /// <summary>The <c>depends=</c> entry of .modinfo: the modules whose exports this one links against.</summary>
    private static HashSet<string> ReadDependencies(ElfObject module)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        if (module.FindSection(".modinfo") is not ElfDataSection modinfo) return set;
        foreach (var entry in System.Text.Encoding.ASCII.GetString(modinfo.Data).Split('\0'))
            if (entry.StartsWith("depends=", StringComparison.Ordinal))
                foreach (var name in entry["depends=".Length..].Split(',', StringSplitOptions.RemoveEmptyEntries))
                    set.Add(KernelObjectNames.Normalize(name));
        return set;
    }

    public override ReadOnlyMemory<byte>? Read(KernelSymbol symbol, int length)
    {
        if (_module.GetSection((int)(symbol.Address >> 32)) is not ElfDataSection section) return null;
        var offset = (int)(symbol.Address & 0xffff_ffff);
        return offset + length <= section.Data.Length ? section.Data.AsMemory(offset, length) : null;
    }
}
