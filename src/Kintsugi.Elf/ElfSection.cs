namespace Kintsugi.Elf;

/// <summary>
/// A section of an <see cref="ElfObject"/>. The subclass says how the contents are modelled:
/// <see cref="ElfDataSection"/> (plain bytes), <see cref="ElfNoBitsSection"/>,
/// <see cref="ElfStringTableSection"/>, <see cref="ElfSymbolTableSection"/>,
/// <see cref="ElfSymbolTableIndexSection"/>, <see cref="ElfRelocationSection"/>,
/// <see cref="ElfGroupSection"/> and <see cref="ElfNoteSection"/>.
/// References between sections are object references; the writer turns them into indexes.
/// </summary>
public abstract class ElfSection
{
    private protected ElfSection(string name, ElfSectionType type)
    {
        ArgumentNullException.ThrowIfNull(name);
        Name = name;
        Type = type;
    }

    public string Name { get; set; }

    public ElfSectionType Type { get; }

    public ElfSectionFlags Flags { get; set; }

    /// <summary>sh_addr; 0 in relocatable objects.</summary>
    public ulong Address { get; set; }

    /// <summary>sh_addralign: 0 or a power of two.</summary>
    public ulong Alignment { get; set; }

    /// <summary>sh_entsize: the size of one entry for tables of fixed-size entries, else 0.</summary>
    public ulong EntrySize { get; set; }

    /// <summary>
    /// sh_link as a section. Symbol tables link their string table, relocation sections, groups and
    /// extended index tables their symbol table, <see cref="ElfSectionFlags.LinkOrder"/> sections the
    /// section they follow.
    /// </summary>
    public ElfSection? Link { get; set; }

    /// <summary>
    /// sh_info as a plain number, for sections whose sh_info the model does not interpret.
    /// Symbol tables, relocation sections and groups compute theirs.
    /// </summary>
    public uint Info { get; set; }

    /// <summary>
    /// sh_info as a section, used instead of <see cref="Info"/> when <see cref="Flags"/> has
    /// <see cref="ElfSectionFlags.InfoLink"/> (relocation sections use <see cref="ElfRelocationSection.Target"/>).
    /// </summary>
    public ElfSection? InfoSection { get; set; }

    /// <summary>sh_size as it would be written now (for string tables: as read).</summary>
    public abstract ulong Size { get; }

    /// <summary>
    /// The section header index in <see cref="Object"/>, kept current as sections are added and removed; 0 when
    /// detached.
    /// </summary>
    public int Index { get; internal set; }

    /// <summary>The object this section belongs to, or null.</summary>
    public ElfObject? Object { get; internal set; }

    /// <summary>Where the section was in the file it was read from; lets the writer keep the original layout.</summary>
    internal SectionOrigin? Origin { get; set; }

    /// <summary>Set by the writer: the sh_name it will write.</summary>
    internal uint WriteNameOffset;

    /// <summary>Whether the section's contents occupy bytes in the file (everything except SHT_NOBITS).</summary>
    internal virtual bool OccupiesFile => true;

    internal virtual ulong GetWriteSize(ElfWriter writer) => Size;

    internal abstract void WriteContent(Span<byte> destination, ElfWriter writer);

    internal virtual uint GetWriteInfo(ElfWriter writer)
        => Flags.HasFlag(ElfSectionFlags.InfoLink) ? (uint)(InfoSection?.Index ?? 0) : Info;

    /// <summary>Checks that every reference leaves this section for something the object will write.</summary>
    internal virtual void ValidateReferences(ElfObject owner)
    {
        ElfWriter.RequireMember(owner, this, Link, "sh_link");
        if (Flags.HasFlag(ElfSectionFlags.InfoLink))
        {
            ElfWriter.RequireMember(owner, this, InfoSection, "sh_info");
        }
    }

    public override string ToString() => $"[{Index}] {Name} ({Type})";
}

/// <summary>The section's position in the file it was read from.</summary>
internal sealed record SectionOrigin(
    ElfObject Owner,
    int Index,
    ulong Offset,
    ulong FileSize,
    bool OccupiedFile,
    uint NameOffset,
    string NameAsRead,
    ElfStringTableSection? NameTable);
