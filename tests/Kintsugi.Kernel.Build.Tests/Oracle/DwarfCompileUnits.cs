using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Kintsugi.Kernel.Build.Tests.Oracle;

/// <summary>
/// The names of the compile units (DW_AT_name of each DW_TAG_compile_unit) in an ELF file's .debug_info:
/// which sources were compiled into a debug vmlinux or module. Reads only each unit's header and first
/// entry through positioned reads, so a 600 MB vmlinux costs a few thousand small reads; in relocatable
/// modules the two offsets it needs (abbreviations and the name's string) come from .rela.debug_info.
/// </summary>
public static class DwarfCompileUnits
{
    private const int ShtRela = 4, ShtSymtab = 2, RX8664_32 = 10;
    private const ulong ShfCompressed = 0x800;

    private sealed record Section(string Name, uint Type, ulong Flags, long Offset, long Size, uint Link, uint Info);

    public static IReadOnlyList<string> Read(string path)
    {
        using var file = File.OpenHandle(path);
        var header = ReadAt(file, 0, 64);
        if (header[0] != 0x7f || !header.AsSpan(1, 3).SequenceEqual("ELF"u8) || header[4] != 2 || header[5] != 1)
            throw new InvalidDataException($"{path} is not a little-endian ELF64 file");
        var relocatable = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(16)) == 1;
        var sections = Sections(file, header);
        var info = sections.FirstOrDefault(s => s.Name == ".debug_info");
        if (info is null) return [];
        if ((info.Flags & ShfCompressed) != 0)
            throw new InvalidDataException($"{path}: compressed .debug_info is not supported");
        var abbrev = ReadAt(file, sections.Single(s => s.Name == ".debug_abbrev").Offset,
            (int)sections.Single(s => s.Name == ".debug_abbrev").Size);
        var strings = sections.Where(s => s.Name is ".debug_str" or ".debug_line_str").ToDictionary(s => s.Name,
            s => ReadAt(file, s.Offset, (int)s.Size));
        var relocations = relocatable ? Relocations(file, sections, Array.IndexOf([.. sections], info)) : null;

        var names = new List<string>();
        long offset = 0;
        while (offset + 11 < info.Size)
        {
            var head = ReadAt(file, info.Offset + offset, (int)Math.Min(256, info.Size - offset));
            var length = BinaryPrimitives.ReadUInt32LittleEndian(head);
            if (length == 0xffffffff) throw new InvalidDataException($"{path}: 64-bit DWARF is not supported");
            var version = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(4));
            int position;
            long abbrevOffset;
            int addressSize;
            if (version >= 5)
            {
                addressSize = head[7];
                abbrevOffset = Relocated(relocations, offset + 8,
                    BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(8)));
                position = 12;
                if (head[6] is 0x04 or 0x05) position += 8; // skeleton and split units carry a dwo id
            }
            else
            {
                abbrevOffset = Relocated(relocations, offset + 6,
                    BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(6)));
                addressSize = head[10];
                position = 11;
            }
            var name = UnitName(head, position, offset, abbrev, abbrevOffset, addressSize, strings, relocations);
            if (name is not null) names.Add(name);
            offset += 4 + length;
        }
        return names;
    }

    private static string? UnitName(byte[] die, int position, long unitOffset, byte[] abbrev, long abbrevOffset,
        int addressSize, Dictionary<string, byte[]> strings, SortedList<long, long>? relocations)
    {
        var code = Uleb(die, ref position);
        var at = (int)abbrevOffset;
        // Find the abbreviation with this code in the unit's table.
        while (true)
        {
            var entry = Uleb(abbrev, ref at);
            if (entry == 0) return null;
            var tag = Uleb(abbrev, ref at);
            at++; // children
            if (entry == code)
            {
                if (tag != 0x11) return null; // not a compile unit (a type or partial unit)
                break;
            }
            while (true)
            {
                var attribute = Uleb(abbrev, ref at);
                var form = Uleb(abbrev, ref at);
                if (form == 0x21) Sleb(abbrev, ref at);
                if (attribute == 0 && form == 0) break;
            }
        }
        while (true)
        {
            var attribute = Uleb(abbrev, ref at);
            var form = Uleb(abbrev, ref at);
            if (form == 0x21) Sleb(abbrev, ref at);
            if (attribute == 0 && form == 0) return null;
            if (attribute == 0x03)
            {
                return form switch
                {
                    0x08 => CString(die, position),
                    0x0e => CString(strings[".debug_str"], (int)Relocated(relocations, unitOffset + position,
                        BinaryPrimitives.ReadUInt32LittleEndian(die.AsSpan(position)))),
                    0x1f => CString(strings[".debug_line_str"], (int)Relocated(relocations, unitOffset + position,
                        BinaryPrimitives.ReadUInt32LittleEndian(die.AsSpan(position)))),
                    _ => throw new InvalidDataException($"DW_AT_name in form 0x{form:x} is not supported"),
                };
            }
            position += form switch
            {
                0x01 => addressSize,
                0x0b or 0x11 or 0x0c or 0x25 => 1,
                0x05 or 0x12 or 0x26 => 2,
                0x27 => 3,
                0x06 or 0x0e or 0x1f or 0x17 or 0x13 or 0x10 or 0x28 => 4,
                0x07 or 0x14 or 0x20 => 8,
                0x1e => 16,
                0x19 or 0x21 => 0,
                0x08 => Array.IndexOf(die, (byte)0, position) - position + 1,
                0x0f or 0x0d or 0x1a or 0x1b or 0x15 => UlebLength(die, position),
                0x18 or 0x09 => UlebValueAndLength(die, position),
                0x0a => 1 + die[position],
                _ => throw new InvalidDataException($"DWARF form 0x{form:x} before DW_AT_name is not supported"),
            };
        }
    }

    private static long Relocated(SortedList<long, long>? relocations, long offset, uint stored) =>
        relocations is not null && relocations.TryGetValue(offset, out var value) ? value : stored;

    /// <summary>.rela.debug_info of a relocatable file: offset → symbol value + addend, for 32-bit absolute
    /// relocations.</summary>
    private static SortedList<long, long> Relocations(SafeFileHandle file, IReadOnlyList<Section> sections,
        int infoIndex)
    {
        var result = new SortedList<long, long>();
        var rela = sections.FirstOrDefault(s => s.Type == ShtRela && s.Info == infoIndex);
        if (rela is null) return result;
        var symtab = sections[(int)rela.Link];
        var symbols = ReadAt(file, symtab.Offset, (int)symtab.Size);
        var entries = ReadAt(file, rela.Offset, (int)rela.Size);
        var map = new Dictionary<long, long>();
        for (var i = 0; i + 24 <= entries.Length; i += 24)
        {
            var info = BinaryPrimitives.ReadUInt64LittleEndian(entries.AsSpan(i + 8));
            if ((uint)info != RX8664_32) continue;
            var symbol = (int)(info >> 32);
            var value = (long)BinaryPrimitives.ReadUInt64LittleEndian(symbols.AsSpan(symbol * 24 + 8));
            map[(long)BinaryPrimitives.ReadUInt64LittleEndian(entries.AsSpan(i))] = value
                + BinaryPrimitives.ReadInt64LittleEndian(entries.AsSpan(i + 16));
        }
        foreach (var (key, value) in map) result.Add(key, value);
        return result;
    }

    private static IReadOnlyList<Section> Sections(SafeFileHandle file, byte[] header)
    {
        var shoff = (long)BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(0x28));
        var shentsize = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(0x3a));
        var shnum = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(0x3c));
        var shstrndx = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(0x3e));
        var table = ReadAt(file, shoff, shentsize * shnum);
        var raw = Enumerable.Range(0, shnum).Select(i => table.AsSpan(i * shentsize, shentsize).ToArray()).ToList();
        var names = raw[shstrndx] is var n ? ReadAt(file, (long)BinaryPrimitives.ReadUInt64LittleEndian(n.AsSpan(0x18)),
            (int)BinaryPrimitives.ReadUInt64LittleEndian(n.AsSpan(0x20))) : [];
        return raw.Select(s => new Section(
            CString(names, (int)BinaryPrimitives.ReadUInt32LittleEndian(s)),
            BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(4)),
            BinaryPrimitives.ReadUInt64LittleEndian(s.AsSpan(8)),
            (long)BinaryPrimitives.ReadUInt64LittleEndian(s.AsSpan(0x18)),
            (long)BinaryPrimitives.ReadUInt64LittleEndian(s.AsSpan(0x20)),
            BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(0x28)),
            BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(0x2c)))).ToList();
    }

    private static byte[] ReadAt(SafeFileHandle file, long offset, int length)
    {
        var buffer = new byte[length];
        var read = 0;
        while (read < length)
        {
            var n = RandomAccess.Read(file, buffer.AsSpan(read), offset + read);
            if (n == 0) throw new InvalidDataException("unexpected end of file");
            read += n;
        }
        return buffer;
    }

    private static string CString(byte[] bytes, int start)
    {
        var end = Array.IndexOf(bytes, (byte)0, start);
        return Encoding.UTF8.GetString(bytes, start, (end < 0 ? bytes.Length : end) - start);
    }

    private static ulong Uleb(byte[] bytes, ref int position)
    {
        ulong value = 0;
        var shift = 0;
        while (true)
        {
            var b = bytes[position++];
            value |= (ulong)(b & 0x7f) << shift;
            if ((b & 0x80) == 0) return value;
            shift += 7;
        }
    }

    private static void Sleb(byte[] bytes, ref int position)
    {
        while ((bytes[position++] & 0x80) != 0) { }
    }

    private static int UlebLength(byte[] bytes, int position)
    {
        var start = position;
        Uleb(bytes, ref position);
        return position - start;
    }

    private static int UlebValueAndLength(byte[] bytes, int position)
    {
        var start = position;
        var value = Uleb(bytes, ref position);
        return position - start + (int)value;
    }
}
