namespace Kintsugi.Elf;

/// <summary>Raw values of the format that the public enums do not need to show.</summary>
internal static class ElfConstants
{
    public const int FileHeaderSize = 64;
    public const int SectionHeaderSize = 64;
    public const ushort ReservedSectionIndexStart = 0xff00;
    public const ushort ExtendedSectionIndex = 0xffff;
    public const byte ClassElf64 = 2;
    public const byte DataLittleEndian = 1;
}
