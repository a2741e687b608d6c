using System.Buffers.Binary;
using System.Text;

namespace Kintsugi.User;

/// <summary>A symbol of a linked ELF object (<c>.symtab</c> or <c>.dynsym</c>).</summary>
public sealed record ElfImageSymbol(string Name, ulong Value, ulong Size, byte Type, byte Binding, ushort SectionIndex,
    bool HiddenVersion)
{
    public const byte TypeObject = 1, TypeFunction = 2, TypeTls = 6, TypeIndirectFunction = 10;
    public const byte BindingLocal = 0, BindingGlobal = 1;
    public bool Defined => SectionIndex != 0;
}

/// <summary>A dynamic relocation of a linked object (<c>.rela.dyn</c>, <c>.rela.plt</c>).</summary>
public sealed record ElfDynamicRelocation(ulong Offset, uint Type, string SymbolName, long Addend)
{
    public const uint GlobDat = 6, JumpSlot = 7;
}

/// <summary>A program header.</summary>
public sealed record
    ElfSegment(uint Type, uint Flags, ulong Offset, ulong VirtualAddress, ulong FileSize, ulong MemorySize)
{
    public const uint Load = 1, Note = 4;
}

/// <summary>
/// The few facts the user-space patcher needs from a linked ELF64 x86-64 object (an executable or a shared
/// library): segments, symbols, dynamic relocations and the build-id. Every offset is checked against the
/// image, so a malformed file ends in <see cref="UserPatchException"/>.
/// </summary>
public sealed class ElfImage
{
    private readonly byte[] _image;
    private readonly List<(string Name, uint Type, ulong Address, ulong Offset, ulong Size, uint Link,
        ulong EntrySize)> _sections = [];

    private ElfImage(byte[] image, string origin)
    {
        _image = image;
        Origin = origin;
        var span = image.AsSpan();
        if (span.Length < 64 || span[0] != 0x7f || span[1] != (byte)'E' || span[2] != (byte)'L' || span[3] != (byte)'F'
            || span[4] != 2 || span[5] != 1)
            throw Malformed("not an ELF64 little-endian file");
        Type = BinaryPrimitives.ReadUInt16LittleEndian(span[16..]);
        if (BinaryPrimitives.ReadUInt16LittleEndian(span[18..]) != 62) throw Malformed("not an x86-64 object");
        var phoff = BinaryPrimitives.ReadUInt64LittleEndian(span[32..]);
        var shoff = BinaryPrimitives.ReadUInt64LittleEndian(span[40..]);
        var phnum = BinaryPrimitives.ReadUInt16LittleEndian(span[56..]);
        var shnum = BinaryPrimitives.ReadUInt16LittleEndian(span[60..]);
        var shstrndx = BinaryPrimitives.ReadUInt16LittleEndian(span[62..]);
        var segments = new List<ElfSegment>();
        for (var i = 0; i < phnum; i++)
        {
            var p = Slice(phoff + (ulong)i * 56, 56);
            segments.Add(new ElfSegment(BinaryPrimitives.ReadUInt32LittleEndian(p),
                BinaryPrimitives.ReadUInt32LittleEndian(p[4..]),
                BinaryPrimitives.ReadUInt64LittleEndian(p[8..]), BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
                BinaryPrimitives.ReadUInt64LittleEndian(p[32..]), BinaryPrimitives.ReadUInt64LittleEndian(p[40..])));
        }
        Segments = segments;
        var raw = new List<(uint NameOffset, uint Type, ulong Address, ulong Offset, ulong Size, uint Link,
            ulong EntrySize)>();
        for (var i = 0; i < shnum; i++)
        {
            var s = Slice(shoff + (ulong)i * 64, 64);
            raw.Add((BinaryPrimitives.ReadUInt32LittleEndian(s), BinaryPrimitives.ReadUInt32LittleEndian(s[4..]),
                BinaryPrimitives.ReadUInt64LittleEndian(s[16..]), BinaryPrimitives.ReadUInt64LittleEndian(s[24..]),
                BinaryPrimitives.ReadUInt64LittleEndian(s[32..]), BinaryPrimitives.ReadUInt32LittleEndian(s[40..]),
                BinaryPrimitives.ReadUInt64LittleEndian(s[56..])));
        }
        var names =
            shstrndx < raw.Count && raw[shstrndx].Type != 8 ? (raw[shstrndx].Offset, raw[shstrndx].Size) : (0UL, 0UL);
        foreach (var s in raw)
            _sections.Add((names.Item2 == 0 ? "" : String(names.Item1, names.Item2, s.NameOffset), s.Type, s.Address,
                s.Offset, s.Size, s.Link, s.EntrySize));
    }

    /// <summary>Where the image came from, for messages.</summary>
    public string Origin { get; }

    /// <summary>ET_EXEC (2) or ET_DYN (3).</summary>
    public ushort Type { get; }

    public IReadOnlyList<ElfSegment> Segments { get; }

    public static ElfImage Load(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserPatchException($"cannot read {path}: {e.Message}", ExitCode.NotFound, e);
        }
        return new ElfImage(bytes, path);
    }

    public static ElfImage Parse(byte[] image, string origin) => new(image, origin);

    /// <summary>The lowest PT_LOAD address, rounded down to its page: what the load base is relative to.</summary>
    public ulong FirstLoadAddress => Segments.Where(s => s.Type == ElfSegment.Load)
        .Select(s => s.VirtualAddress & ~0xfffUL).DefaultIfEmpty(0UL).Min();

    public BuildId? BuildId
    {
        get
        {
            foreach (var s in _sections.Where(s => s.Type == 7))
                if (BuildIdFromNotes(Slice(s.Offset, s.Size)) is { } id) return id;
            foreach (var segment in Segments.Where(s => s.Type == ElfSegment.Note))
                if (BuildIdFromNotes(Slice(segment.Offset, segment.FileSize)) is { } id) return id;
            return null;
        }
    }

    private static BuildId? BuildIdFromNotes(ReadOnlySpan<byte> notes)
    {
        try { return Kintsugi.BuildId.FromNotes(notes); }
        catch (FormatException) { return null; }
    }

    public bool HasSection(string name) => _sections.Any(s => s.Name == name);

    /// <summary>The symbols of <c>.symtab</c> (<paramref name="dynamic"/> false) or <c>.dynsym</c>.</summary>
    public IReadOnlyList<ElfImageSymbol> Symbols(bool dynamic)
    {
        var index = _sections.FindIndex(s => s.Type == (dynamic ? 11u : 2u));
        if (index < 0) return [];
        var table = _sections[index];
        if (table.Link >= _sections.Count) throw Malformed("symbol table links to no string table");
        var strings = _sections[(int)table.Link];
        var count = table.Size / 24;
        var versions = dynamic ? _sections.FindIndex(s => s.Type == 0x6fffffff) : -1;
        var symbols = new List<ElfImageSymbol>((int)Math.Min(count, 1 << 20));
        for (ulong i = 0; i < count; i++)
        {
            var e = Slice(table.Offset + i * 24, 24);
            var hidden = versions >= 0 && (
                BinaryPrimitives.ReadUInt16LittleEndian(Slice(_sections[versions].Offset + i * 2, 2)) & 0x8000) != 0;
            symbols.Add(
                new ElfImageSymbol(String(strings.Offset, strings.Size, BinaryPrimitives.ReadUInt32LittleEndian(e)),
                BinaryPrimitives.ReadUInt64LittleEndian(e[8..]), BinaryPrimitives.ReadUInt64LittleEndian(e[16..]),
                (byte)(e[4] & 0xf), (byte)(e[4] >> 4), BinaryPrimitives.ReadUInt16LittleEndian(e[6..]), hidden));
        }
        return symbols;
    }

    /// <summary>The relocations the dynamic linker applies (<c>SHT_RELA</c> sections linked to
    /// <c>.dynsym</c>).</summary>
    public IReadOnlyList<ElfDynamicRelocation> DynamicRelocations()
    {
        var dynsymIndex = _sections.FindIndex(s => s.Type == 11);
        if (dynsymIndex < 0) return [];
        var dynsym = Symbols(dynamic: true);
        var relocations = new List<ElfDynamicRelocation>();
        foreach (var section in _sections.Where(s => s.Type == 4 && s.Link == dynsymIndex))
            for (ulong i = 0; i < section.Size / 24; i++)
            {
                var e = Slice(section.Offset + i * 24, 24);
                var info = BinaryPrimitives.ReadUInt64LittleEndian(e[8..]);
                var symbol = (int)(info >> 32);
                relocations.Add(new ElfDynamicRelocation(BinaryPrimitives.ReadUInt64LittleEndian(e), (uint)info,
                    symbol > 0 && symbol < dynsym.Count ? dynsym[symbol].Name : "",
                    BinaryPrimitives.ReadInt64LittleEndian(e[16..])));
            }
        return relocations;
    }

    /// <summary>The file bytes at a virtual address (inside one PT_LOAD's file part).</summary>
    public ReadOnlySpan<byte> ReadAt(ulong address, ulong length)
    {
        foreach (var s in Segments.Where(s => s.Type == ElfSegment.Load))
            if (address >= s.VirtualAddress && address + length <= s.VirtualAddress + s.FileSize)
                return Slice(s.Offset + (address - s.VirtualAddress), length);
        throw Malformed($"0x{address:x}+{length} is not in the file part of any loaded segment");
    }

    private ReadOnlySpan<byte> Slice(ulong offset, ulong length)
    {
        if (offset > (ulong)_image.Length || length > (ulong)_image.Length - offset)
            throw Malformed($"a structure at offset 0x{offset:x} ({length} bytes) lies outside the file");
        return _image.AsSpan((int)offset, (int)length);
    }

    private string String(ulong tableOffset, ulong tableSize, uint offset)
    {
        if (offset >= tableSize) return "";
        var bytes = Slice(tableOffset + offset, tableSize - offset);
        var end = bytes.IndexOf((byte)0);
        return Encoding.UTF8.GetString(end < 0 ? bytes : bytes[..end]);
    }

    private UserPatchException Malformed(string what) => new($"{Origin}: malformed ELF object: {what}");
}
