using System.Buffers.Binary;

namespace Kintsugi.Elf;

/// <summary>
/// SHT_RELA: relocations that apply to <see cref="Target"/> (sh_info) against symbols of
/// <see cref="SymbolTable"/> (sh_link).
/// </summary>
public sealed class ElfRelocationSection : ElfSection
{
    internal const int EntrySizeInBytes = 24;

    /// <summary>Creates ".rela" + the target's name, flagged SHF_INFO_LINK as gas does.</summary>
    public ElfRelocationSection(ElfSection target, ElfSymbolTableSection symbolTable)
        : this(".rela" + target.Name, target, symbolTable)
    {
    }

    public ElfRelocationSection(string name, ElfSection? target, ElfSymbolTableSection? symbolTable)
        : base(name, ElfSectionType.Rela)
    {
        Target = target;
        Link = symbolTable;
        Flags = ElfSectionFlags.InfoLink;
        Alignment = 8;
        EntrySize = EntrySizeInBytes;
    }

    /// <summary>The section the relocations patch (sh_info).</summary>
    public ElfSection? Target { get; set; }

    /// <summary>The symbol table the relocations refer to (sh_link).</summary>
    public ElfSymbolTableSection? SymbolTable
    {
        get => Link as ElfSymbolTableSection;
        set => Link = value;
    }

    public List<ElfRelocation> Relocations { get; } = [];

    public override ulong Size => (ulong)Relocations.Count * EntrySizeInBytes;

    internal override uint GetWriteInfo(ElfWriter writer) => (uint)(Target?.Index ?? 0);

    internal override void ValidateReferences(ElfObject owner)
    {
        ElfWriter.RequireMember(owner, this, Link, "sh_link");
        ElfWriter.RequireMember(owner, this, Target, "target (sh_info)");
        if (Link is not ElfSymbolTableSection table)
        {
            throw new InvalidOperationException($"Relocation section '{Name}' needs a symbol table as its Link.");
        }

        foreach (var relocation in Relocations)
        {
            if (relocation.Symbol is { } symbol && !ReferenceEquals(symbol.SymbolTable, table))
            {
                throw new InvalidOperationException(
                    $"Relocation at 0x{relocation.Offset:x} in '{Name}' refers to symbol '{symbol.Name}', which is " +
                    $"not in '{table.Name}'.");
            }
        }
    }

    internal override void WriteContent(Span<byte> destination, ElfWriter writer)
    {
        int offset = 0;
        foreach (var relocation in Relocations)
        {
            var entry = destination.Slice(offset, EntrySizeInBytes);
            ulong info = ((ulong)(uint)(relocation.Symbol?.Index ?? 0) << 32) | (uint)relocation.Type;
            BinaryPrimitives.WriteUInt64LittleEndian(entry, relocation.Offset);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[8..], info);
            BinaryPrimitives.WriteInt64LittleEndian(entry[16..], relocation.Addend);
            offset += EntrySizeInBytes;
        }
    }
}

/// <summary>
/// SHT_GROUP: sections that a linker keeps or discards together (COMDAT for C++ inline functions and
/// templates), identified by the <see cref="Signature"/> symbol (sh_info) of <see cref="SymbolTable"/> (sh_link).
/// </summary>
public sealed class ElfGroupSection : ElfSection
{
    public ElfGroupSection(string name, ElfSymbolTableSection? symbolTable, ElfSymbol? signature,
        ElfGroupFlags groupFlags = ElfGroupFlags.Comdat)
        : base(name, ElfSectionType.Group)
    {
        Link = symbolTable;
        Signature = signature;
        GroupFlags = groupFlags;
        Alignment = 4;
        EntrySize = 4;
    }

    public ElfGroupFlags GroupFlags { get; set; }

    public ElfSymbol? Signature { get; set; }

    public ElfSymbolTableSection? SymbolTable
    {
        get => Link as ElfSymbolTableSection;
        set => Link = value;
    }

    /// <summary>The member sections, in the order the group lists them.</summary>
    public List<ElfSection> Members { get; } = [];

    public override ulong Size => (ulong)(Members.Count + 1) * 4;

    internal override uint GetWriteInfo(ElfWriter writer) => (uint)(Signature?.Index ?? 0);

    internal override void ValidateReferences(ElfObject owner)
    {
        base.ValidateReferences(owner);
        if (Link is not ElfSymbolTableSection table)
        {
            throw new InvalidOperationException($"Group section '{Name}' needs a symbol table as its Link.");
        }

        if (Signature is { } signature && !ReferenceEquals(signature.SymbolTable, table))
        {
            throw new InvalidOperationException($"Group section '{Name}' has signature '{signature.Name}', which is " +
                $"not in '{table.Name}'.");
        }

        foreach (var member in Members)
        {
            ElfWriter.RequireMember(owner, this, member, "member");
        }
    }

    internal override void WriteContent(Span<byte> destination, ElfWriter writer)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, (uint)GroupFlags);
        int offset = 4;
        foreach (var member in Members)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(destination[offset..], (uint)member.Index);
            offset += 4;
        }
    }
}
