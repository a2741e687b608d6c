namespace Kintsugi.Elf;

/// <summary>
/// The fields of the ELF file header that describe the object. Layout fields (e_shoff, e_shnum,
/// e_shstrndx, sizes) are not here: the writer derives them from the sections.
/// </summary>
public sealed class ElfHeader
{
    public ElfFileType Type { get; set; } = ElfFileType.Relocatable;

    public ElfMachine Machine { get; set; } = ElfMachine.X86_64;

    /// <summary>e_ident[EI_OSABI]; 0 is System V, 3 is GNU.</summary>
    public byte OsAbi { get; set; }

    /// <summary>e_ident[EI_ABIVERSION].</summary>
    public byte AbiVersion { get; set; }

    /// <summary>e_version; 1 (EV_CURRENT) in every real file.</summary>
    public uint Version { get; set; } = 1;

    /// <summary>e_entry; 0 in relocatable objects.</summary>
    public ulong Entry { get; set; }

    /// <summary>e_flags; no flags are defined for x86-64.</summary>
    public uint Flags { get; set; }

    // Bytes no tool interprets but a byte-identical round trip must reproduce.
    internal byte IdentVersion = 1;
    internal byte[] IdentPadding = new byte[7];
    internal ushort ProgramHeaderEntrySize;
}
