using System.Buffers.Binary;

namespace Kintsugi.Kernel;

/// <summary>
/// The section table of an ELF64 little-endian file, read-only and just enough for the machine side:
/// finding <c>.modinfo</c>, the build-id note and the livepatch markers of a module or kernel image.
/// The full, editable ELF model lives on the build side (Kintsugi.Elf) and is deliberately not a
/// dependency of what runs on every production machine.
/// </summary>
public sealed class ElfSectionTable
{
    private readonly byte[] _image;

    public IReadOnlyList<ElfSectionHeader> Sections { get; }

    private ElfSectionTable(byte[] image, IReadOnlyList<ElfSectionHeader> sections)
    {
        _image = image;
        Sections = sections;
    }

    public static bool HasElfMagic(ReadOnlySpan<byte> bytes) =>
        bytes.Length >= 4 && bytes[..4].SequenceEqual("\u007FELF"u8);

    /// <summary>Reads the section table. Throws <see cref="InvalidDataException"/> when the file is not a sane ELF64 LE
    /// image.</summary>
    public static ElfSectionTable Read(byte[] image)
    {
        ReadOnlySpan<byte> span = image;
        if (!HasElfMagic(span)) throw new InvalidDataException("not an ELF file");
        if (span.Length < 64 || span[4] != 2 || span[5] != 1)
            throw new InvalidDataException("not a 64-bit little-endian ELF file");
        var sectionTableOffset = BinaryPrimitives.ReadUInt64LittleEndian(span[0x28..]);
        var entrySize = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3A..]);
        uint count = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3C..]);
        uint namesIndex = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3E..]);
        if (sectionTableOffset == 0) return new ElfSectionTable(image, []);
        if (entrySize != 64) throw new InvalidDataException($"unexpected section header size {entrySize}");
        if (sectionTableOffset > (ulong)span.Length || sectionTableOffset + 64 > (ulong)span.Length)
            throw new InvalidDataException("section table lies outside the file");
        // Extended numbering: the real count and name-table index live in section 0.
        var first = span.Slice((int)sectionTableOffset, 64);
        if (count == 0) count = (uint)BinaryPrimitives.ReadUInt64LittleEndian(first[0x20..]);
        if (namesIndex == 0xFFFF) namesIndex = BinaryPrimitives.ReadUInt32LittleEndian(first[0x28..]);
        if ((ulong)count * 64 > (ulong)span.Length - sectionTableOffset)
            throw new InvalidDataException("section table extends past the end of the file");

        var raw = new (uint Name, uint Type, ulong Flags, ulong Offset, ulong Size)[count];
        for (var i = 0; i < count; i++)
        {
            var h = span.Slice((int)sectionTableOffset + i * 64, 64);
            raw[i] = (BinaryPrimitives.ReadUInt32LittleEndian(h), BinaryPrimitives.ReadUInt32LittleEndian(h[4..]),
                BinaryPrimitives.ReadUInt64LittleEndian(h[8..]), BinaryPrimitives.ReadUInt64LittleEndian(h[0x18..]),
                BinaryPrimitives.ReadUInt64LittleEndian(h[0x20..]));
            const uint ShtNobits = 8;
            if (raw[i].Type != ShtNobits
                && (raw[i].Offset > (ulong)span.Length || raw[i].Size > (ulong)span.Length - raw[i].Offset))
                throw new InvalidDataException($"section {i} lies outside the file");
        }
        if (namesIndex >= count) throw new InvalidDataException("section name table index is out of range");
        var names = span.Slice((int)raw[namesIndex].Offset, (int)raw[namesIndex].Size);
        var sections = new ElfSectionHeader[count];
        for (var i = 0; i < count; i++)
        {
            var name = raw[i].Name < names.Length ? ReadCString(names[(int)raw[i].Name..]) : "";
            sections[i] = new ElfSectionHeader(i, name, raw[i].Type, raw[i].Flags, raw[i].Offset, raw[i].Size);
        }
        return new ElfSectionTable(image, sections);
    }

    public ElfSectionHeader? Find(string name) => Sections.FirstOrDefault(s => s.Name == name);

    public ReadOnlySpan<byte> Contents(ElfSectionHeader section) =>
        section.Type == 8 ? ReadOnlySpan<byte>.Empty : _image.AsSpan((int)section.Offset, (int)section.Size);

    /// <summary>The GNU build-id from any note section, or null.</summary>
    public BuildId? FindBuildId()
    {
        const uint ShtNote = 7;
        foreach (var section in Sections.Where(s => s.Type == ShtNote))
            if (BuildId.FromNotes(Contents(section)) is { } id) return id;
        return null;
    }

    internal static string ReadCString(ReadOnlySpan<byte> bytes)
    {
        var end = bytes.IndexOf((byte)0);
        return System.Text.Encoding.UTF8.GetString(end < 0 ? bytes : bytes[..end]);
    }
}

public sealed record ElfSectionHeader(int Index, string Name, uint Type, ulong Flags, ulong Offset, ulong Size);
