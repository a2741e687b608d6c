using System.Buffers.Binary;
using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Robustness;

/// <summary>One malformed variant of a well-formed object and what was done to it.</summary>
internal sealed record Mutation(string Description, byte[] Bytes);

/// <summary>
/// Families of malformed objects, each a deterministic function of a well-formed object and a seeded random source.
/// Most aim at fields the reader does not (and cannot) validate, such as symbol values, sizes, relocation offsets,
/// types and addends, section names and flags, so that the malformed object reaches the differ and the writer.
/// </summary>
internal static class Mutations
{
    public delegate Mutation Family(ObjectLayout layout, Random random);

    /// <summary>Values at the edges of every integer width and of the file.</summary>
    private static ulong Absurd(Random random, ObjectLayout layout, ulong near) => random.Next(12) switch
    {
        0 => 0,
        1 => near + 1,
        2 => near - 1,
        3 => near + (ulong)random.Next(1, 64),
        4 => (ulong)layout.Bytes.Length + (ulong)random.Next(-8, 8),
        5 => 0x7fff_ffff,
        6 => 0x8000_0000,
        7 => 0xffff_ffff,
        8 => 0x7fff_ffff_ffff_ffff,
        9 => ulong.MaxValue - (ulong)random.Next(0, 64),
        10 => near * 2 + 1,
        _ => (ulong)random.NextInt64(),
    };

    private static byte[] With(byte[] seed, int at, int width, ulong value)
    {
        var bytes = (byte[])seed.Clone();
        Write(bytes, at, width, value);
        return bytes;
    }

    private static void Write(byte[] bytes, int at, int width, ulong value)
    {
        var field = bytes.AsSpan(at, width);
        switch (width)
        {
            case 1: field[0] = (byte)value; break;
            case 2: BinaryPrimitives.WriteUInt16LittleEndian(field, (ushort)value); break;
            case 4: BinaryPrimitives.WriteUInt32LittleEndian(field, (uint)value); break;
            default: BinaryPrimitives.WriteUInt64LittleEndian(field, value); break;
        }
    }

    private static T Pick<T>(Random random, IReadOnlyList<T> items) => items[random.Next(items.Count)];

    private static ObjectLayout.Header AnySection(Random random, ObjectLayout layout) => Pick(random, layout.Sections);

    public static Mutation Truncated(ObjectLayout layout, Random random)
    {
        int cut = random.Next(2) == 0
            ? Math.Clamp(Pick(random, layout.Boundaries().ToList()) + random.Next(-2, 3), 0, layout.Bytes.Length - 1)
            : random.Next(layout.Bytes.Length);
        return new($"truncated to {cut} of {layout.Bytes.Length} bytes", layout.Bytes[..cut]);
    }

    public static Mutation SectionOffsetOrSize(ObjectLayout layout, Random random)
    {
        var section = AnySection(random, layout);
        if (random.Next(4) == 0)
        {
            // Overlap: contents moved onto another section's (or onto the header table).
            var other = AnySection(random, layout);
            ulong onto = random.Next(5) == 0 ? (ulong)layout.TableOffset : other.Offset
                + (ulong)random.Next(0, (int)Math.Min(other.Size + 1, 16));
            return new($"section [{section.Index}] sh_offset moved onto [{other.Index}] at 0x{onto:x}",
                With(layout.Bytes, section.At + 24, 8, onto));
        }
        bool size = random.Next(2) == 0;
        ulong value = Absurd(random, layout, size ? section.Size : section.Offset);
        return new($"section [{section.Index}] {(size ? "sh_size" : "sh_offset")} = 0x{value:x}",
            With(layout.Bytes, section.At + (size ? 32 : 24), 8, value));
    }

    public static Mutation LinkOrInfo(ObjectLayout layout, Random random)
    {
        var section = AnySection(random, layout);
        bool link = random.Next(2) == 0;
        // Mostly another real section, which the reader accepts where the type allows it.
        ulong value = random.Next(4) == 0 ? Absurd(random, layout, (ulong)layout.Sections.Count)
            : (ulong)random.Next(0, layout.Sections.Count + 3);
        return new($"section [{section.Index}] {(link ? "sh_link" : "sh_info")} = {value}",
            With(layout.Bytes, section.At + (link ? 40 : 44), 4, value));
    }

    public static Mutation SymbolSectionIndexOrName(ObjectLayout layout, Random random)
    {
        int symbol = random.Next(1, layout.SymbolCount);
        if (random.Next(2) == 0)
        {
            ulong index = random.Next(5) switch
            {
                0 => Pick(random, new ulong[] { 0, 0xfff1, 0xfff2, 0xff00, 0xff1f, 0xff20, 0xffff, 0xfffe }),
                1 => (ulong)random.Next(0x10000),
                _ => (ulong)random.Next(0, layout.Sections.Count + 3),
            };
            return new($"symbol {symbol} st_shndx = 0x{index:x}",
                With(layout.Bytes, layout.Symbol(symbol) + 6, 2, index));
        }
        ulong name = random.Next(4) == 0 ? Absurd(random, layout, layout.StringTable.Size)
            : (ulong)random.Next(0, (int)layout.StringTable.Size + 4);
        return new($"symbol {symbol} st_name = 0x{name:x}", With(layout.Bytes, layout.Symbol(symbol), 4, name));
    }

    public static Mutation SymbolValueOrSize(ObjectLayout layout, Random random)
    {
        int symbol = random.Next(1, layout.SymbolCount);
        int at = layout.Symbol(symbol);
        switch (random.Next(5))
        {
            case 0:
                {
                    byte info = (byte)random.Next(256);
                    return new($"symbol {symbol} st_info = 0x{info:x2}", With(layout.Bytes, at + 4, 1, info));
                }
            case 1:
            case 2:
                {
                    ulong value = Absurd(random, layout,
                        BinaryPrimitives.ReadUInt64LittleEndian(layout.Bytes.AsSpan(at + 8)));
                    return new($"symbol {symbol} st_value = 0x{value:x}", With(layout.Bytes, at + 8, 8, value));
                }
            default:
                {
                    ulong size = Absurd(random, layout,
                        BinaryPrimitives.ReadUInt64LittleEndian(layout.Bytes.AsSpan(at + 16)));
                    return new($"symbol {symbol} st_size = 0x{size:x}", With(layout.Bytes, at + 16, 8, size));
                }
        }
    }

    private static (ObjectLayout.Header Section, int Entry, int At) AnyRelocation(Random random, ObjectLayout layout)
    {
        var section = Pick(random, layout.Relocations.ToList());
        int entry = random.Next((int)(section.Size / 24));
        return (section, entry, (int)section.Offset + entry * 24);
    }

    public static Mutation RelocationSymbol(ObjectLayout layout, Random random)
    {
        var (section, entry, at) = AnyRelocation(random, layout);
        ulong symbol = random.Next(4) == 0 ? Absurd(random, layout, (ulong)layout.SymbolCount) & 0xffff_ffff
            : (ulong)random.Next(0, layout.SymbolCount + 3);
        return new($"relocation {entry} of [{section.Index}] symbol = {symbol}",
            With(layout.Bytes, at + 12, 4, symbol));
    }

    public static Mutation RelocationType(ObjectLayout layout, Random random)
    {
        var (section, entry, at) = AnyRelocation(random, layout);
        ulong type = random.Next(5) == 0 ? (ulong)random.NextInt64(0, 1L << 32) : (ulong)random.Next(0, 44);
        return new($"relocation {entry} of [{section.Index}] type = {type}", With(layout.Bytes, at + 8, 4, type));
    }

    public static Mutation RelocationOffsetOrAddend(ObjectLayout layout, Random random)
    {
        var (section, entry, at) = AnyRelocation(random, layout);
        if (random.Next(2) == 0)
        {
            var target = layout.Sections.FirstOrDefault(s => s.Index == section.Info);
            ulong offset = Absurd(random, layout, target?.Size ?? 0);
            return new($"relocation {entry} of [{section.Index}] r_offset = 0x{offset:x}",
                With(layout.Bytes, at, 8, offset));
        }
        ulong addend = random.Next(3) == 0 ? (ulong)(long)random.Next(-64, 64)
            : Absurd(random, layout, BinaryPrimitives.ReadUInt64LittleEndian(layout.Bytes.AsSpan(at + 16)));
        return new($"relocation {entry} of [{section.Index}] r_addend = 0x{addend:x}",
            With(layout.Bytes, at + 16, 8, addend));
    }

    /// <summary>
    /// Section counts, table sizes, entry sizes and alignments that claim far more (or less) than is there.
    /// </summary>
    public static Mutation AbsurdCountOrSize(ObjectLayout layout, Random random)
    {
        switch (random.Next(6))
        {
            case 0:
                {
                    ulong count = Absurd(random, layout, (ulong)layout.Sections.Count + 1) & 0xffff;
                    return new($"e_shnum = {count}", With(layout.Bytes, 60, 2, count));
                }
            case 1:
                {
                    // e_shnum 0 defers the count to section header 0.
                    var bytes = With(layout.Bytes, 60, 2, 0);
                    ulong count = Absurd(random, layout, (ulong)layout.Sections.Count + 1);
                    Write(bytes, layout.TableOffset + 32, 8, count);
                    return new($"e_shnum = 0, sh[0].sh_size = 0x{count:x}", bytes);
                }
            case 2:
                {
                    var table = random.Next(2) == 0 ? layout.SymbolTable : Pick(random, layout.Relocations.ToList());
                    ulong size = random.Next(2) == 0 ? table.Size + 24UL * (ulong)random.Next(-3, 4)
                        : Absurd(random, layout, table.Size);
                    return new($"section [{table.Index}] sh_size = 0x{size:x} (a table of 24-byte entries)",
                        With(layout.Bytes, table.At + 32, 8, size));
                }
            case 3:
                {
                    var section = AnySection(random, layout);
                    ulong entry = Absurd(random, layout, section.EntrySize);
                    return new($"section [{section.Index}] sh_entsize = 0x{entry:x}",
                        With(layout.Bytes, section.At + 56, 8, entry));
                }
            case 4:
                {
                    var section = AnySection(random, layout);
                    ulong alignment = random.Next(2) == 0 ? 1UL << random.Next(64) : Absurd(random, layout, 16);
                    return new($"section [{section.Index}] sh_addralign = 0x{alignment:x}",
                        With(layout.Bytes, section.At + 48, 8, alignment));
                }
            default:
                {
                    // A .bss claiming exabytes: allowed by the format, as there are no bytes to check.
                    var bss = layout.Sections.Where(s => !s.OccupiesFile).ToList();
                    var section = bss.Count > 0 ? Pick(random, bss) : AnySection(random, layout);
                    ulong size = Absurd(random, layout, section.Size);
                    return new($"section [{section.Index}] (NOBITS) sh_size = 0x{size:x}",
                        With(layout.Bytes, section.At + 32, 8, size));
                }
        }
    }

    /// <summary>
    /// No symbol table, two of them, or a table turned into something else (and something else into a table).
    /// </summary>
    public static Mutation SymbolTables(ObjectLayout layout, Random random)
    {
        switch (random.Next(4))
        {
            case 0:
                {
                    ulong type = Pick(random, new ulong[] { 0, 1, 3, 4, 7, 8, 11, 17, 18 });
                    return new($"symbol table [{layout.SymbolTable.Index}] sh_type = {type}",
                        With(layout.Bytes, layout.SymbolTable.At + 4, 4, type));
                }
            case 1:
                {
                    // Another section claims to be a symbol table over the same strings.
                    var section = AnySection(random, layout);
                    var bytes = With(layout.Bytes, section.At + 4, 4, ObjectLayout.Header.SymbolTableType);
                    Write(bytes, section.At + 40, 4, (ulong)layout.StringTable.Index);
                    Write(bytes, section.At + 56, 8, 24);
                    return new($"section [{section.Index}] turned into a symbol table", bytes);
                }
            case 2:
                {
                    var elf = ElfObject.Read(layout.Bytes);
                    var table = elf.SymbolTable!;
                    var doomed = elf.Sections.Where(s => s is ElfRelocationSection or ElfGroupSection
                        || ReferenceEquals(s, table)).ToList();
                    elf.RemoveSections(doomed);
                    return new("symbol table and relocations removed", elf.ToArray());
                }
            default:
                {
                    var elf = ElfObject.Read(layout.Bytes);
                    var table = elf.SymbolTable!;
                    var copy = new ElfSymbolTableSection(".symtab") { StringTable = table.StringTable };
                    var clones = new Dictionary<ElfSymbol, ElfSymbol>(ReferenceEqualityComparer.Instance);
                    foreach (var symbol in table.Symbols)
                    {
                        // Some symbols are lost, some change place, as in a table written by a broken tool.
                        if (random.Next(8) == 0) continue;
                        var clone = new ElfSymbol(symbol.Name)
                        {
                            Binding = symbol.Binding,
                            Type = symbol.Type,
                            Other = symbol.Other,
                            Value = symbol.Value,
                            Size = symbol.Size
                        };
                        if (symbol.Section is { } section)
                            clone.Section = random.Next(16) == 0 ? Pick(random, elf.Sections) : section;
                        else clone.SpecialSection = symbol.SpecialSection;
                        clones[symbol] = clone;
                        copy.Symbols.Add(clone);
                    }
                    bool first = random.Next(2) == 0;
                    elf.Sections.Insert(first ? table.Index - 1 : table.Index, copy);
                    int moved = 0;
                    foreach (var relocations in elf.Sections.OfType<ElfRelocationSection>().ToList())
                    {
                        if (random.Next(2) == 0
                            || !relocations.Relocations.All(r => r.Symbol is null
                            || clones.ContainsKey(r.Symbol))) continue;
                        relocations.SymbolTable = copy;
                        foreach (var relocation in relocations.Relocations)
                            if (relocation.Symbol is { } symbol) relocation.Symbol = clones[symbol];
                        moved++;
                    }
                    return new($"a second, damaged symbol table {(first ? "before" : "after")} the first; {moved} " +
                        "relocation sections use it", elf.ToArray());
                }
        }
    }

    /// <summary>Random bytes in the ELF header and the section header table.</summary>
    public static Mutation HeaderBytes(ObjectLayout layout, Random random)
    {
        var bytes = (byte[])layout.Bytes.Clone();
        var changes = new List<string>();
        for (int n = random.Next(1, 5); n > 0; n--)
        {
            int at = random.Next(2) == 0 ? random.Next(64) : layout.TableOffset
                + random.Next((layout.Sections.Count + 1) * 64);
            bytes[at] = random.Next(2) == 0 ? (byte)(bytes[at] ^ (1 << random.Next(8))) : (byte)random.Next(256);
            changes.Add($"[0x{at:x}]=0x{bytes[at]:x2}");
        }
        return new($"header bytes {string.Join(' ', changes)}", bytes);
    }

    /// <summary>
    /// Sections renamed to another section's name (a code section called __bug_table, data called .text.x) or given
    /// other flags.
    /// </summary>
    public static Mutation SectionNameOrFlags(ObjectLayout layout, Random random)
    {
        var section = AnySection(random, layout);
        if (random.Next(2) == 0)
        {
            uint name = Pick(random, layout.SectionNameOffsets.ToList())
                + (uint)(random.Next(4) == 0 ? random.Next(1, 6) : 0);
            return new($"section [{section.Index}] sh_name = 0x{name:x}", With(layout.Bytes, section.At, 4, name));
        }
        ulong flag = Pick(random, new ulong[] { 0x1, 0x2, 0x4, 0x10, 0x20, 0x40, 0x80, 0x200, 0x400, 0x8000_0000 });
        ulong flags = random.Next(4) == 0 ? (ulong)random.NextInt64() : section.Flags ^ flag;
        return new($"section [{section.Index}] sh_flags = 0x{flags:x}", With(layout.Bytes, section.At + 8, 8, flags));
    }

    /// <summary>
    /// Two to four field mutations of the other families in one object: inconsistencies that only meet in combination.
    /// </summary>
    public static Mutation Combined(ObjectLayout layout, Random random)
    {
        Family[] families = [SectionOffsetOrSize, LinkOrInfo, SymbolSectionIndexOrName, SymbolValueOrSize,
            RelocationSymbol, RelocationType,
            RelocationOffsetOrAddend, SectionNameOrFlags, ContentBytes];
        var bytes = (byte[])layout.Bytes.Clone();
        var descriptions = new List<string>();
        for (int n = random.Next(2, 5); n > 0; n--)
        {
            var single = Pick(random, families)(layout, random);
            // Each mutation is the same length as the object: its changed bytes are laid over the others'.
            for (int i = 0; i < bytes.Length; i++)
                if (single.Bytes[i] != layout.Bytes[i]) bytes[i] = single.Bytes[i];
            descriptions.Add(single.Description);
        }
        return new(string.Join("; ", descriptions), bytes);
    }

    /// <summary>
    /// Random bytes in code, data, special tables and string literals: what the disassembler and the table parsers see.
    /// </summary>
    public static Mutation ContentBytes(ObjectLayout layout, Random random)
    {
        var candidates = layout.Sections.Where(s => s.OccupiesFile && s.Size > 0 && s.Type is 1).ToList();
        var section = Pick(random, candidates);
        var bytes = (byte[])layout.Bytes.Clone();
        var changes = new List<string>();
        for (int n = random.Next(1, 9); n > 0; n--)
        {
            int at = (int)section.Offset + random.Next((int)section.Size);
            bytes[at] = (byte)random.Next(256);
            changes.Add($"+0x{at - (int)section.Offset:x}=0x{bytes[at]:x2}");
        }
        return new($"section [{section.Index}] contents {string.Join(' ', changes)}", bytes);
    }
}
