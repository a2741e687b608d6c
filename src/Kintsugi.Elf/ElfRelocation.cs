namespace Kintsugi.Elf;

/// <summary>
/// An Elf64_Rela entry: patch <see cref="Offset"/> of the target section with <see cref="Type"/>(S + A).
/// </summary>
public sealed class ElfRelocation
{
    public ElfRelocation(ulong offset, X86RelocationType type, ElfSymbol? symbol, long addend)
    {
        Offset = offset;
        Type = type;
        Symbol = symbol;
        Addend = addend;
    }

    /// <summary>r_offset: where in the target section the relocation applies.</summary>
    public ulong Offset { get; set; }

    public X86RelocationType Type { get; set; }

    /// <summary>The symbol S, from the relocation section's symbol table; null for symbol index 0.</summary>
    public ElfSymbol? Symbol { get; set; }

    public long Addend { get; set; }

    public override string ToString()
    {
        string addend = Addend < 0 ? $"-0x{unchecked((ulong)-Addend):x}" : $"+0x{Addend:x}";
        return $"0x{Offset:x} {Type} {Symbol?.Name ?? "<none>"}{addend}";
    }
}
