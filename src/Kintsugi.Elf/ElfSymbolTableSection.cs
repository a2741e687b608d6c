using System.Buffers.Binary;

namespace Kintsugi.Elf;

/// <summary>
/// SHT_SYMTAB: the symbols, with <see cref="ElfSection.Link"/> naming the string table of their names.
/// </summary>
public sealed class ElfSymbolTableSection : ElfSection
{
    internal const int EntrySizeInBytes = 24;

    public ElfSymbolTableSection(string name = ".symtab")
        : base(name, ElfSectionType.SymbolTable)
    {
        Symbols = new ElfSymbolCollection(this);
        Alignment = 8;
        EntrySize = EntrySizeInBytes;
    }

    /// <summary>The symbols in index order; the null symbol 0 is implicit.</summary>
    public ElfSymbolCollection Symbols { get; }

    /// <summary>The string table holding the symbol names (sh_link).</summary>
    public ElfStringTableSection? StringTable
    {
        get => Link as ElfStringTableSection;
        set => Link = value;
    }

    public override ulong Size => (ulong)(Symbols.Count + 1) * EntrySizeInBytes;

    /// <summary>
    /// The symbol at ELF index <paramref name="index"/> (1-based; 0 is the null symbol and gives null).
    /// </summary>
    public ElfSymbol? GetSymbol(int index) => index == 0 ? null : Symbols[index - 1];

    /// <summary>The first symbol named <paramref name="name"/>, or null.</summary>
    public ElfSymbol? Find(string name)
    {
        foreach (var symbol in Symbols)
        {
            if (symbol.Name == name)
            {
                return symbol;
            }
        }

        return null;
    }

    /// <summary>The STT_SECTION symbol of <paramref name="section"/>, or null.</summary>
    public ElfSymbol? FindSectionSymbol(ElfSection section)
    {
        foreach (var symbol in Symbols)
        {
            if (symbol.Type == ElfSymbolType.Section && ReferenceEquals(symbol.Section, section))
            {
                return symbol;
            }
        }

        return null;
    }

    internal override uint GetWriteInfo(ElfWriter writer)
    {
        // One greater than the index of the last local symbol; the writer has put locals first.
        int locals = 0;
        while (locals < Symbols.Count && Symbols[locals].Binding == ElfSymbolBinding.Local)
        {
            locals++;
        }

        return (uint)locals + 1;
    }

    internal override void ValidateReferences(ElfObject owner)
    {
        base.ValidateReferences(owner);
        if (Link is not ElfStringTableSection)
        {
            throw new InvalidOperationException($"Symbol table '{Name}' needs a string table as its Link.");
        }

        foreach (var symbol in Symbols)
        {
            if (symbol.Section is { } section && !ReferenceEquals(section.Object, owner))
            {
                throw new InvalidOperationException(
                    $"Symbol '{symbol.Name}' is defined in section '{section.Name}', which is not in this object.");
            }

            ushort special = (ushort)symbol.SpecialSection;
            if (symbol.Section is null && special != 0
                && (special < ElfConstants.ReservedSectionIndexStart || special == ElfConstants.ExtendedSectionIndex))
            {
                throw new InvalidOperationException($"Symbol '{symbol.Name}' has special section index " +
                    $"0x{special:x}, which is not a reserved index.");
            }
        }
    }

    internal override void WriteContent(Span<byte> destination, ElfWriter writer)
    {
        destination[..EntrySizeInBytes].Clear();
        bool hasIndexTable = writer.HasExtendedIndexTable(this);
        int offset = EntrySizeInBytes;
        foreach (var symbol in Symbols)
        {
            var entry = destination.Slice(offset, EntrySizeInBytes);
            BinaryPrimitives.WriteUInt32LittleEndian(entry, symbol.WriteNameOffset);
            entry[4] = (byte)(((byte)symbol.Binding << 4) | ((byte)symbol.Type & 0xf));
            entry[5] = symbol.Other;
            ushort shndx = symbol.Section is { } section
                ? (ElfWriter.UsesExtendedIndex(symbol, hasIndexTable) ? ElfConstants.ExtendedSectionIndex
                    : (ushort)section.Index)
                : (ushort)symbol.SpecialSection;
            BinaryPrimitives.WriteUInt16LittleEndian(entry[6..], shndx);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[8..], symbol.Value);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[16..], symbol.Size);
            offset += EntrySizeInBytes;
        }
    }
}

/// <summary>
/// SHT_SYMTAB_SHNDX: the full section indexes of symbols whose st_shndx is SHN_XINDEX, needed once an
/// object has 0xff00 sections or more. Derived entirely from its symbol table (<see cref="ElfSection.Link"/>).
/// </summary>
public sealed class ElfSymbolTableIndexSection : ElfSection
{
    public ElfSymbolTableIndexSection(string name = ".symtab_shndx")
        : base(name, ElfSectionType.SymbolTableSectionIndex)
    {
        Alignment = 4;
        EntrySize = 4;
    }

    public ElfSymbolTableSection? SymbolTable
    {
        get => Link as ElfSymbolTableSection;
        set => Link = value;
    }

    public override ulong Size => SymbolTable is { } table ? (ulong)(table.Symbols.Count + 1) * 4 : 0;

    internal override void ValidateReferences(ElfObject owner)
    {
        base.ValidateReferences(owner);
        if (Link is not ElfSymbolTableSection)
        {
            throw new InvalidOperationException($"Extended index section '{Name}' needs a symbol table as its Link.");
        }
    }

    internal override void WriteContent(Span<byte> destination, ElfWriter writer)
    {
        var table = SymbolTable!;
        destination[..4].Clear();
        int offset = 4;
        foreach (var symbol in table.Symbols)
        {
            uint index = ElfWriter.UsesExtendedIndex(symbol, true) ? (uint)symbol.Section!.Index : 0;
            BinaryPrimitives.WriteUInt32LittleEndian(destination[offset..], index);
            offset += 4;
        }
    }
}
