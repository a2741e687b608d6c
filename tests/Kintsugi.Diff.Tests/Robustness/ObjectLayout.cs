using System.Buffers.Binary;

namespace Kintsugi.Diff.Tests.Robustness;

/// <summary>Where the structures of a well-formed relocatable object lie, so that mutations can aim at them.</summary>
internal sealed class ObjectLayout
{
    public sealed record Header(int Index, int At, uint Name, uint Type, ulong Flags, ulong Offset, ulong Size,
        uint Link, uint Info, ulong EntrySize)
    {
        public const uint SymbolTableType = 2, StringTableType = 3, RelaType = 4, NoBitsType = 8;
        public bool OccupiesFile => Type != NoBitsType;
    }

    public ObjectLayout(byte[] bytes)
    {
        Bytes = bytes;
        TableOffset = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(40));
        int count = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(60));
        for (int i = 1; i < count; i++)
        {
            int at = TableOffset + i * 64;
            var h = bytes.AsSpan(at, 64);
            Sections.Add(new Header(i, at,
                BinaryPrimitives.ReadUInt32LittleEndian(h), BinaryPrimitives.ReadUInt32LittleEndian(h[4..]),
                BinaryPrimitives.ReadUInt64LittleEndian(h[8..]), BinaryPrimitives.ReadUInt64LittleEndian(h[24..]),
                BinaryPrimitives.ReadUInt64LittleEndian(h[32..]), BinaryPrimitives.ReadUInt32LittleEndian(h[40..]),
                BinaryPrimitives.ReadUInt32LittleEndian(h[44..]), BinaryPrimitives.ReadUInt64LittleEndian(h[56..])));
        }
        SymbolTable = Sections.Single(s => s.Type == Header.SymbolTableType);
        StringTable = Sections[(int)SymbolTable.Link - 1];
        SectionNames = Sections[BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(62)) - 1];
    }

    public byte[] Bytes { get; }
    public int TableOffset { get; }
    public List<Header> Sections { get; } = [];
    public Header SymbolTable { get; }
    public Header StringTable { get; }
    public Header SectionNames { get; }
    public int SymbolCount => (int)(SymbolTable.Size / 24);
    public IEnumerable<Header> Relocations => Sections.Where(s => s.Type == Header.RelaType && s.Size > 0);

    /// <summary>File offset of symbol <paramref name="index"/> (0 is the null symbol).</summary>
    public int Symbol(int index) => (int)SymbolTable.Offset + index * 24;

    /// <summary>Offsets in .shstrtab where a section name starts: renaming a section to another's name.</summary>
    public IEnumerable<uint> SectionNameOffsets => Sections.Select(s => s.Name).Distinct();

    /// <summary>The offsets every structure starts or ends at: where truncation is most interesting.</summary>
    public IEnumerable<int> Boundaries()
    {
        yield return 0;
        yield return 64;
        yield return TableOffset;
        foreach (var section in Sections)
        {
            yield return section.At;
            if (!section.OccupiesFile) continue;
            yield return (int)section.Offset;
            yield return (int)(section.Offset + section.Size);
        }
        yield return Bytes.Length;
    }
}
