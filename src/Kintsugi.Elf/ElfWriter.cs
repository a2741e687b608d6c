using System.Buffers.Binary;
using System.Text;

namespace Kintsugi.Elf;

/// <summary>
/// Serializes an <see cref="ElfObject"/>. When the sections are the ones read, in the same order and
/// with the same sizes, their contents go back to their original offsets over a copy of the original
/// file, which keeps padding and trailing data (such as a module signature) and makes an unmodified
/// round trip byte-identical. Otherwise the file is laid out anew in section order.
/// </summary>
internal sealed class ElfWriter
{
    private readonly ElfObject _object;
    private readonly Dictionary<ElfStringTableSection, byte[]> _stringTables = [];
    private readonly HashSet<ElfSymbolTableSection> _symbolTablesWithIndexSection = [];

    public ElfWriter(ElfObject elf)
    {
        _object = elf;
    }

    public static void RequireMember(ElfObject owner, ElfSection referrer, ElfSection? referenced, string what)
    {
        if (referenced is not null && !ReferenceEquals(referenced.Object, owner))
        {
            throw new InvalidOperationException(
                $"Section '{referrer.Name}' refers ({what}) to section '{referenced.Name}', which is not in this " +
                "object.");
        }
    }

    /// <summary>
    /// Whether the writer encodes this symbol's section through SHN_XINDEX and the extended index table.
    /// </summary>
    public static bool UsesExtendedIndex(ElfSymbol symbol, bool hasIndexTable)
        => symbol.Section is { } section
            && hasIndexTable
            && (section.Index >= ElfConstants.ReservedSectionIndexStart || symbol.ReadThroughExtendedIndex);

    public bool HasExtendedIndexTable(ElfSymbolTableSection table) => _symbolTablesWithIndexSection.Contains(table);

    public byte[] GetStringTableContents(ElfStringTableSection table) => _stringTables[table];

    public byte[] Write()
    {
        Normalize();
        Validate();
        PlanStringTables();

        var sections = _object.Sections;
        var sizes = new ulong[sections.Count];
        for (int i = 0; i < sections.Count; i++)
        {
            sizes[i] = sections[i].OccupiesFile ? sections[i].GetWriteSize(this) : 0;
        }

        byte[] output;
        ulong[] offsets;
        ulong headerTableOffset;
        if (CanKeepOriginalLayout(sizes))
        {
            output = (byte[])_object.OriginalImage!.Clone();
            offsets = sections.Select(s => s.Origin!.Offset).ToArray();
            headerTableOffset = _object.OriginalSectionHeaderOffset;
        }
        else
        {
            offsets = LayOut(sizes, out headerTableOffset, out ulong fileSize);
            output = new byte[fileSize];
        }

        WriteFileHeader(output, headerTableOffset);
        for (int i = 0; i < sections.Count; i++)
        {
            if (sizes[i] != 0)
            {
                sections[i].WriteContent(output.AsSpan((int)offsets[i], (int)sizes[i]), this);
            }
        }

        WriteSectionHeaders(output.AsSpan((int)headerTableOffset), offsets, sizes);
        return output;
    }

    /// <summary>Puts local symbols first and adds extended index tables where symbols need them.</summary>
    private void Normalize()
    {
        var sections = _object.Sections;
        foreach (var table in sections.OfType<ElfSymbolTableSection>())
        {
            table.Symbols.SortLocalsFirst();
        }

        if (sections.Count + 1 > ElfConstants.ReservedSectionIndexStart)
        {
            foreach (var table in sections.OfType<ElfSymbolTableSection>().ToList())
            {
                bool hasIndexSection = sections.Any(s => s is ElfSymbolTableIndexSection x
                    && ReferenceEquals(x.Link, table));
                if (!hasIndexSection)
                {
                    // Inserting shifts later sections up, so decide on the count after insertion.
                    var indexSection = new ElfSymbolTableIndexSection { SymbolTable = table };
                    sections.Insert(table.Index, indexSection);
                    if (!table.Symbols.Any(s => s.Section is { Index: >= ElfConstants.ReservedSectionIndexStart }))
                    {
                        sections.Remove(indexSection);
                    }
                }
            }
        }

        foreach (var indexSection in sections.OfType<ElfSymbolTableIndexSection>())
        {
            if (indexSection.Link is ElfSymbolTableSection table)
            {
                _symbolTablesWithIndexSection.Add(table);
            }
        }
    }

    private void Validate()
    {
        if (_object.SectionNameTable is { } names && !ReferenceEquals(names.Object, _object))
        {
            throw new InvalidOperationException($"The section name table '{names.Name}' is not in this object.");
        }

        var seenIndexTables = new HashSet<ElfSection>();
        foreach (var section in _object.Sections)
        {
            section.ValidateReferences(_object);
            if (section is ElfSymbolTableIndexSection { Link: { } table } && !seenIndexTables.Add(table))
            {
                throw new InvalidOperationException($"Symbol table '{table.Name}' has more than one extended index " +
                    "section.");
            }

            if (section.Alignment != 0 && (section.Alignment & (section.Alignment - 1)) != 0)
            {
                throw new InvalidOperationException($"Section '{section.Name}' has alignment {section.Alignment}, " +
                    "which is not a power of two.");
            }
        }
    }

    /// <summary>
    /// Keeps a string table's bytes when every name using it still has the offset it was read from;
    /// otherwise rebuilds it from those names.
    /// </summary>
    private void PlanStringTables()
    {
        var users =
            new Dictionary<ElfStringTableSection, (List<ElfSection> Sections,
            List<ElfSymbolTableSection> SymbolTables)>();
        foreach (var table in _object.Sections.OfType<ElfStringTableSection>())
        {
            users[table] = ([], []);
        }

        if (_object.SectionNameTable is { } sectionNames)
        {
            users[sectionNames].Sections.AddRange(_object.Sections);
        }
        else if (_object.Sections.FirstOrDefault(s => s.Name.Length != 0) is { } named)
        {
            throw new InvalidOperationException($"Section '{named.Name}' has a name but the object has no section " +
                "name table.");
        }

        foreach (var symbols in _object.Sections.OfType<ElfSymbolTableSection>())
        {
            users[(ElfStringTableSection)symbols.Link!].SymbolTables.Add(symbols);
        }

        foreach (var (table, (sections, symbolTables)) in users)
        {
            bool keep = sections.All(s => s.Origin is { } o && ReferenceEquals(o.NameTable, table) && o.NameAsRead
                == s.Name)
                && symbolTables.All(t => t.Symbols.All(s => ReferenceEquals(s.OriginNameTable, table) && s.OriginName
                    == s.Name));
            if (keep)
            {
                foreach (var section in sections)
                {
                    section.WriteNameOffset = section.Origin!.NameOffset;
                }

                foreach (var symbol in symbolTables.SelectMany(t => t.Symbols))
                {
                    symbol.WriteNameOffset = symbol.OriginNameOffset;
                }

                _stringTables[table] = table.Contents.ToArray();
                continue;
            }

            var builder = new StringTableBuilder();
            foreach (var section in sections)
            {
                section.WriteNameOffset = builder.Add(section.Name);
            }

            foreach (var symbol in symbolTables.SelectMany(t => t.Symbols))
            {
                symbol.WriteNameOffset = builder.Add(symbol.Name);
            }

            _stringTables[table] = builder.ToArray();
        }
    }

    private bool CanKeepOriginalLayout(ulong[] sizes)
    {
        if (_object.OriginalImage is null)
        {
            return false;
        }

        var sections = _object.Sections;
        for (int i = 0; i < sections.Count; i++)
        {
            var origin = sections[i].Origin;
            if (origin is null
                || !ReferenceEquals(origin.Owner, _object)
                || origin.Index != i + 1
                || origin.OccupiedFile != sections[i].OccupiesFile
                || origin.FileSize != sizes[i])
            {
                return false;
            }
        }

        // The same number of sections means the section header table still fits where it was.
        ulong originalCount = BinaryPrimitives.ReadUInt16LittleEndian(_object.OriginalImage.AsSpan(60));
        if (originalCount == 0)
        {
            originalCount = BinaryPrimitives.ReadUInt64LittleEndian(
                _object.OriginalImage.AsSpan((int)_object.OriginalSectionHeaderOffset + 32));
        }

        return originalCount == (ulong)sections.Count + 1;
    }

    /// <summary>
    /// ELF header, then each section's contents at its alignment in section order, then the section header table.
    /// </summary>
    private ulong[] LayOut(ulong[] sizes, out ulong headerTableOffset, out ulong fileSize)
    {
        var sections = _object.Sections;
        var offsets = new ulong[sections.Count];
        ulong position = ElfConstants.FileHeaderSize;
        for (int i = 0; i < sections.Count; i++)
        {
            ulong alignment = Math.Max(sections[i].Alignment, 1);
            if (sections[i].OccupiesFile && sizes[i] != 0)
            {
                position = AlignUp(position, alignment);
            }

            offsets[i] = position;
            position = checked(position + sizes[i]);
            CheckFileSize(position);
        }

        headerTableOffset = AlignUp(position, 8);
        fileSize = checked(headerTableOffset + (ulong)(sections.Count + 1) * ElfConstants.SectionHeaderSize);
        CheckFileSize(fileSize);
        return offsets;
    }

    private static ulong AlignUp(ulong value, ulong alignment)
    {
        ulong result = (value + alignment - 1) & ~(alignment - 1);
        if (result < value)
        {
            throw new InvalidOperationException($"Alignment {alignment} cannot be satisfied within a 64-bit file.");
        }

        CheckFileSize(result);
        return result;
    }

    private static void CheckFileSize(ulong size)
    {
        if (size > (ulong)Array.MaxLength)
        {
            throw new InvalidOperationException($"The object would be {size} bytes, more than an array can hold.");
        }
    }

    private void WriteFileHeader(Span<byte> output, ulong headerTableOffset)
    {
        var header = _object.Header;
        int count = _object.Sections.Count + 1;
        int nameTableIndex = _object.SectionNameTable?.Index ?? 0;
        output[0] = 0x7f;
        output[1] = (byte)'E';
        output[2] = (byte)'L';
        output[3] = (byte)'F';
        output[4] = ElfConstants.ClassElf64;
        output[5] = ElfConstants.DataLittleEndian;
        output[6] = header.IdentVersion;
        output[7] = header.OsAbi;
        output[8] = header.AbiVersion;
        header.IdentPadding.AsSpan(0, 7).CopyTo(output[9..16]);
        BinaryPrimitives.WriteUInt16LittleEndian(output[16..], (ushort)header.Type);
        BinaryPrimitives.WriteUInt16LittleEndian(output[18..], (ushort)header.Machine);
        BinaryPrimitives.WriteUInt32LittleEndian(output[20..], header.Version);
        BinaryPrimitives.WriteUInt64LittleEndian(output[24..], header.Entry);
        BinaryPrimitives.WriteUInt64LittleEndian(output[32..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(output[40..], headerTableOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(output[48..], header.Flags);
        BinaryPrimitives.WriteUInt16LittleEndian(output[52..], ElfConstants.FileHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(output[54..], header.ProgramHeaderEntrySize);
        BinaryPrimitives.WriteUInt16LittleEndian(output[56..], 0);
        BinaryPrimitives.WriteUInt16LittleEndian(output[58..], ElfConstants.SectionHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(output[60..], count >= ElfConstants.ReservedSectionIndexStart
            ? (ushort)0 : (ushort)count);
        BinaryPrimitives.WriteUInt16LittleEndian(output[62..],
            nameTableIndex >= ElfConstants.ReservedSectionIndexStart ? ElfConstants.ExtendedSectionIndex
                : (ushort)nameTableIndex);
    }

    private void WriteSectionHeaders(Span<byte> table, ulong[] offsets, ulong[] sizes)
    {
        int count = _object.Sections.Count + 1;
        int nameTableIndex = _object.SectionNameTable?.Index ?? 0;

        // Section header 0 holds what e_shnum and e_shstrndx cannot.
        var first = table[..ElfConstants.SectionHeaderSize];
        first.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(first[32..], count >= ElfConstants.ReservedSectionIndexStart
            ? (ulong)count : 0);
        BinaryPrimitives.WriteUInt32LittleEndian(first[40..], nameTableIndex >= ElfConstants.ReservedSectionIndexStart
            ? (uint)nameTableIndex : 0);

        var sections = _object.Sections;
        for (int i = 0; i < sections.Count; i++)
        {
            var section = sections[i];
            var entry = table.Slice((i + 1) * ElfConstants.SectionHeaderSize, ElfConstants.SectionHeaderSize);
            ulong size = section.OccupiesFile ? sizes[i] : section.Size;
            BinaryPrimitives.WriteUInt32LittleEndian(entry, _object.SectionNameTable is null ? 0
                : section.WriteNameOffset);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[4..], (uint)section.Type);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[8..], (ulong)section.Flags);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[16..], section.Address);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[24..], offsets[i]);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[32..], size);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[40..], (uint)(section.Link?.Index ?? 0));
            BinaryPrimitives.WriteUInt32LittleEndian(entry[44..], section.GetWriteInfo(this));
            BinaryPrimitives.WriteUInt64LittleEndian(entry[48..], section.Alignment);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[56..], section.EntrySize);
        }
    }

    /// <summary>Builds a string table from scratch: a leading NUL, then each distinct name once.</summary>
    private sealed class StringTableBuilder
    {
        private readonly Dictionary<string, uint> _offsets = new(StringComparer.Ordinal) { [string.Empty] = 0 };
        private byte[] _buffer = new byte[256];
        private int _length = 1;

        public uint Add(string value)
        {
            if (_offsets.TryGetValue(value, out uint existing))
            {
                return existing;
            }

            int byteCount = Encoding.UTF8.GetByteCount(value);
            if ((long)_length + byteCount + 1 > uint.MaxValue)
            {
                throw new InvalidOperationException("A string table would exceed 4 GiB.");
            }

            if (_length + byteCount + 1 > _buffer.Length)
            {
                Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + byteCount + 1));
            }

            uint offset = (uint)_length;
            Encoding.UTF8.GetBytes(value, _buffer.AsSpan(_length));
            _length += byteCount;
            _buffer[_length++] = 0;
            _offsets.Add(value, offset);
            return offset;
        }

        public byte[] ToArray() => _buffer.AsSpan(0, _length).ToArray();
    }
}
