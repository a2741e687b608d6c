using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Kernel;

/// <summary>
/// Where a relocation points: a section by name and an offset in it, or an undefined symbol by name (null
/// section). <see cref="Symbol"/> and <see cref="Addend"/> are the relocation's own, which differ between
/// objects for the same place (a section symbol in one, a function symbol in the other).
/// </summary>
public readonly record struct Place(string? Section, long Offset, string? Symbol, long Addend)
{
    public (string? Section, long Offset) Where => (Section, Offset);
}

/// <summary>
/// One fixed-size entry of a kernel table: its bytes and, by offset in the entry, where its fields point.
/// </summary>
public sealed record TableEntry(int Index, byte[] Bytes, IReadOnlyDictionary<int, Place> Fields)
{
    /// <summary>Where the first field (the code the entry belongs to) points.</summary>
    public Place Code => Fields.GetValueOrDefault(0);
}

/// <summary>
/// Reads the kernel's special tables of an object independently of the differ, for the pair specifications.
/// </summary>
public static class KernelTables
{
    public static IReadOnlyList<TableEntry> Entries(ElfObject elf, string table, int entrySize)
    {
        if (elf.FindSection(table) is not ElfDataSection section) return [];
        var relocations = elf.GetRelocationSections(section).SelectMany(r => r.Relocations).ToList();
        return [.. Enumerable.Range(0, section.Data.Length / entrySize).Select(i => new TableEntry(i,
            section.Data.AsSpan(i * entrySize, entrySize).ToArray(),
            relocations.Where(r => (int)r.Offset / entrySize == i)
                .ToDictionary(r => (int)r.Offset - i * entrySize, PlaceOf)))];
    }

    public static Place PlaceOf(ElfRelocation relocation)
    {
        var symbol = relocation.Symbol!;
        if (symbol.Section is null) return new Place(null, relocation.Addend, symbol.Name, relocation.Addend);
        var offset = relocation.Addend + (symbol.Type == ElfSymbolType.Section ? 0 : (long)symbol.Value);
        return new Place(symbol.Section.Name, offset, symbol.Type == ElfSymbolType.Section ? null : symbol.Name,
            relocation.Addend);
    }

    /// <summary>
    /// The code sections of an object (the differ's output copies each included function's section under its name).
    /// </summary>
    public static IReadOnlySet<string> CodeSections(ElfObject elf) =>
        elf.Sections.Where(s => s.Flags.HasFlag(ElfSectionFlags.ExecInstr) && s.Name is not ".altinstr_replacement"
            and not ".altinstr_aux")
            .Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
}
