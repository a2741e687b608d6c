namespace Kintsugi.Elf;

/// <summary>e_type. Only <see cref="Relocatable"/> files are read.</summary>
public enum ElfFileType : ushort
{
    None = 0,
    Relocatable = 1,
    Executable = 2,
    SharedObject = 3,
    Core = 4,
}

/// <summary>e_machine. Only <see cref="X86_64"/> is read.</summary>
public enum ElfMachine : ushort
{
    None = 0,
    X86_64 = 62,
}

/// <summary>sh_type. Values not named here are kept as they are.</summary>
public enum ElfSectionType : uint
{
    Null = 0,
    ProgBits = 1,
    SymbolTable = 2,
    StringTable = 3,
    Rela = 4,
    Hash = 5,
    Dynamic = 6,
    Note = 7,
    NoBits = 8,
    Rel = 9,
    Shlib = 10,
    DynamicSymbolTable = 11,
    InitArray = 14,
    FiniArray = 15,
    PreInitArray = 16,
    Group = 17,
    SymbolTableSectionIndex = 18,
    Relr = 19,
    GnuAttributes = 0x6ffffff5,
    GnuHash = 0x6ffffff6,
    X86_64Unwind = 0x70000001,
}

/// <summary>sh_flags.</summary>
[Flags]
public enum ElfSectionFlags : ulong
{
    None = 0,
    Write = 0x1,
    Alloc = 0x2,
    ExecInstr = 0x4,
    Merge = 0x10,
    Strings = 0x20,
    /// <summary>sh_info holds a section index (set on relocation sections).</summary>
    InfoLink = 0x40,
    /// <summary>sh_link names the section this one must stay ordered with.</summary>
    LinkOrder = 0x80,
    OsNonConforming = 0x100,
    Group = 0x200,
    Tls = 0x400,
    Compressed = 0x800,
    /// <summary>SHF_RELA_LIVEPATCH: a .klp.rela section the livepatch core applies itself.</summary>
    RelaLivepatch = 0x100000,
    GnuRetain = 0x200000,
    X86_64Large = 0x10000000,
    Exclude = 0x80000000,
}

/// <summary>The high nibble of st_info.</summary>
public enum ElfSymbolBinding : byte
{
    Local = 0,
    Global = 1,
    Weak = 2,
    GnuUnique = 10,
}

/// <summary>The low nibble of st_info.</summary>
public enum ElfSymbolType : byte
{
    NoType = 0,
    Object = 1,
    Function = 2,
    Section = 3,
    File = 4,
    Common = 5,
    Tls = 6,
    GnuIndirectFunction = 10,
}

/// <summary>The low two bits of st_other.</summary>
public enum ElfSymbolVisibility : byte
{
    Default = 0,
    Internal = 1,
    Hidden = 2,
    Protected = 3,
}

/// <summary>
/// Reserved st_shndx values for symbols that are not defined in a section of the file.
/// SHN_XINDEX is not among them: extended indexes are an encoding detail the reader and writer handle.
/// </summary>
public enum ElfSpecialSectionIndex : ushort
{
    Undefined = 0,
    /// <summary>SHN_LIVEPATCH: resolved by the livepatch core when the patched object loads.</summary>
    Livepatch = 0xff20,
    Absolute = 0xfff1,
    Common = 0xfff2,
}

/// <summary>The flag word that starts an SHT_GROUP section.</summary>
[Flags]
public enum ElfGroupFlags : uint
{
    None = 0,
    Comdat = 1,
}
