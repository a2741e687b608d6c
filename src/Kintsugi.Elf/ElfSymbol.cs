namespace Kintsugi.Elf;

/// <summary>
/// An entry of a symbol table. A symbol is either defined in a <see cref="Section"/> or has a
/// <see cref="SpecialSection"/> (undefined, absolute, common, livepatch); setting one clears the other.
/// </summary>
public sealed class ElfSymbol
{
    private ElfSection? _section;
    private ElfSpecialSectionIndex _specialSection;

    public ElfSymbol(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        Name = name;
    }

    public string Name { get; set; }

    public ElfSymbolBinding Binding { get; set; }

    public ElfSymbolType Type { get; set; }

    /// <summary>st_other as a whole; <see cref="Visibility"/> is its low two bits.</summary>
    public byte Other { get; set; }

    public ElfSymbolVisibility Visibility
    {
        get => (ElfSymbolVisibility)(Other & 0x3);
        set => Other = (byte)((Other & ~0x3) | ((byte)value & 0x3));
    }

    /// <summary>The section the symbol is defined in, or null (see <see cref="SpecialSection"/>).</summary>
    public ElfSection? Section
    {
        get => _section;
        set
        {
            _section = value;
            _specialSection = ElfSpecialSectionIndex.Undefined;
        }
    }

    /// <summary>
    /// The reserved st_shndx of a symbol not defined in a section; <see cref="ElfSpecialSectionIndex.Undefined"/> when
    /// <see cref="Section"/> is set.
    /// </summary>
    public ElfSpecialSectionIndex SpecialSection
    {
        get => _specialSection;
        set
        {
            _specialSection = value;
            _section = null;
        }
    }

    /// <summary>st_value: the offset in <see cref="Section"/> (for common symbols: the alignment).</summary>
    public ulong Value { get; set; }

    public ulong Size { get; set; }

    /// <summary>
    /// The index in <see cref="SymbolTable"/>, kept current as symbols are added and removed; 0 when detached.
    /// </summary>
    public int Index { get; internal set; }

    /// <summary>The table this symbol belongs to, or null.</summary>
    public ElfSymbolTableSection? SymbolTable { get; internal set; }

    public bool IsUndefined => _section is null && _specialSection == ElfSpecialSectionIndex.Undefined;

    public bool IsAbsolute => _section is null && _specialSection == ElfSpecialSectionIndex.Absolute;

    public bool IsCommon => _section is null && _specialSection == ElfSpecialSectionIndex.Common;

    // What the file said, so that unchanged names keep their string table offsets and
    // symbols read through SHN_XINDEX are written the same way.
    internal ElfStringTableSection? OriginNameTable;
    internal uint OriginNameOffset;
    internal string? OriginName;
    internal bool ReadThroughExtendedIndex;

    internal uint WriteNameOffset;

    public override string ToString()
    {
        string where = _section is not null ? _section.Name : _specialSection.ToString();
        return $"{Index}: {Name} {Binding} {Type} in {where} +0x{Value:x} size {Size}";
    }
}
