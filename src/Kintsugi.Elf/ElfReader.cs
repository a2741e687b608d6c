using System.Buffers.Binary;

namespace Kintsugi.Elf;

/// <summary>
/// Parses an ELF64 relocatable object. Every offset, size, count and index is checked against the
/// actual image before it is used, so malformed input ends in <see cref="ElfFormatException"/>
/// and nothing is allocated in proportion to a size the file merely claims.
/// </summary>
internal sealed class ElfReader
{
    private readonly byte[] _image;
    private readonly ElfObject _object = new();
    private RawSectionHeader[] _headers = [];
    private ElfSection?[] _sections = [];

    private ElfReader(byte[] image)
    {
        _image = image;
    }

    public static ElfObject Read(byte[] image)
    {
        try
        {
            return new ElfReader(image).ReadObject();
        }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or OverflowException
            or InvalidCastException)
        {
            // A safety net: validation should have caught this first. The tests assert it never fires.
            throw new ElfFormatException($"malformed ELF object ({InternalErrorMarker}: {e.GetType().Name}: " +
                $"{e.Message})", e);
        }
    }

    internal const string InternalErrorMarker = "unvalidated structure";

    private ElfObject ReadObject()
    {
        ReadFileHeader(out ulong sectionHeaderOffset, out int sectionCount, out int sectionNameTableIndex);
        ReadSectionHeaders(sectionHeaderOffset, sectionCount);
        CheckSectionExtents(sectionHeaderOffset);
        CreateSections();
        ReadNames(sectionNameTableIndex);
        ResolveLinks();
        ReadSymbolTables();
        ReadRelocationSections();
        ReadGroups();
        _object.OriginalImage = _image;
        _object.OriginalSectionHeaderOffset = sectionHeaderOffset;
        return _object;
    }

    private void ReadFileHeader(out ulong sectionHeaderOffset, out int sectionCount, out int sectionNameTableIndex)
    {
        var image = _image.AsSpan();
        if (image.Length < ElfConstants.FileHeaderSize)
        {
            throw new ElfFormatException($"file of {image.Length} bytes is too short for an ELF header (64 bytes)");
        }

        if (image[0] != 0x7f || image[1] != (byte)'E' || image[2] != (byte)'L' || image[3] != (byte)'F')
        {
            throw new ElfFormatException("not an ELF file (bad magic)", 0);
        }

        if (image[4] != ElfConstants.ClassElf64)
        {
            throw new ElfFormatException($"ELF class {image[4]} is not supported (only ELF64)", 4);
        }

        if (image[5] != ElfConstants.DataLittleEndian)
        {
            throw new ElfFormatException($"ELF data encoding {image[5]} is not supported (only little-endian)", 5);
        }

        var header = _object.Header;
        header.IdentVersion = image[6];
        header.OsAbi = image[7];
        header.AbiVersion = image[8];
        header.IdentPadding = image[9..16].ToArray();
        header.Type = (ElfFileType)BinaryPrimitives.ReadUInt16LittleEndian(image[16..]);
        header.Machine = (ElfMachine)BinaryPrimitives.ReadUInt16LittleEndian(image[18..]);
        header.Version = BinaryPrimitives.ReadUInt32LittleEndian(image[20..]);
        header.Entry = BinaryPrimitives.ReadUInt64LittleEndian(image[24..]);
        ulong programHeaderOffset = BinaryPrimitives.ReadUInt64LittleEndian(image[32..]);
        sectionHeaderOffset = BinaryPrimitives.ReadUInt64LittleEndian(image[40..]);
        header.Flags = BinaryPrimitives.ReadUInt32LittleEndian(image[48..]);
        ushort headerSize = BinaryPrimitives.ReadUInt16LittleEndian(image[52..]);
        header.ProgramHeaderEntrySize = BinaryPrimitives.ReadUInt16LittleEndian(image[54..]);
        ushort programHeaderCount = BinaryPrimitives.ReadUInt16LittleEndian(image[56..]);
        ushort sectionHeaderSize = BinaryPrimitives.ReadUInt16LittleEndian(image[58..]);
        ushort shortSectionCount = BinaryPrimitives.ReadUInt16LittleEndian(image[60..]);
        ushort shortNameTableIndex = BinaryPrimitives.ReadUInt16LittleEndian(image[62..]);

        if (header.Type != ElfFileType.Relocatable)
        {
            throw new ElfFormatException($"e_type {(ushort)header.Type} is not supported (only ET_REL relocatable " +
                "objects)", 16);
        }

        if (header.Machine != ElfMachine.X86_64)
        {
            throw new ElfFormatException($"e_machine {(ushort)header.Machine} is not supported (only x86-64)", 18);
        }

        if (programHeaderOffset != 0 || programHeaderCount != 0)
        {
            throw new ElfFormatException("relocatable object has program headers", 32);
        }

        if (headerSize != ElfConstants.FileHeaderSize)
        {
            throw new ElfFormatException($"e_ehsize is {headerSize}, expected 64", 52);
        }

        if (sectionHeaderSize != ElfConstants.SectionHeaderSize)
        {
            throw new ElfFormatException($"e_shentsize is {sectionHeaderSize}, expected 64", 58);
        }

        if (sectionHeaderOffset == 0)
        {
            throw new ElfFormatException("object has no section header table (e_shoff is 0)", 40);
        }

        if (sectionHeaderOffset > (ulong)image.Length
            || (ulong)image.Length - sectionHeaderOffset < ElfConstants.SectionHeaderSize)
        {
            throw new ElfFormatException($"section header table at 0x{sectionHeaderOffset:x} is outside the file of " +
                $"{image.Length} bytes", 40);
        }

        // Section header 0 carries the real count and name table index when they do not fit in 16 bits.
        var first = image[(int)sectionHeaderOffset..];
        ulong extendedCount = BinaryPrimitives.ReadUInt64LittleEndian(first[32..]);
        uint extendedNameTableIndex = BinaryPrimitives.ReadUInt32LittleEndian(first[40..]);
        ulong count = shortSectionCount != 0 ? shortSectionCount : extendedCount;
        ulong available = ((ulong)image.Length - sectionHeaderOffset) / ElfConstants.SectionHeaderSize;
        if (count == 0)
        {
            throw new ElfFormatException("section header table is empty", 60);
        }

        if (count > available)
        {
            throw new ElfFormatException(
                $"section header table at 0x{sectionHeaderOffset:x} claims {count} entries but only {available} fit " +
                "in the file", 60);
        }

        sectionCount = (int)count;
        uint nameTableIndex = shortNameTableIndex;
        if (shortNameTableIndex == ElfConstants.ExtendedSectionIndex)
        {
            nameTableIndex = extendedNameTableIndex;
        }
        else if (shortNameTableIndex >= ElfConstants.ReservedSectionIndexStart)
        {
            throw new ElfFormatException($"e_shstrndx 0x{shortNameTableIndex:x} is a reserved index", 62);
        }

        if (nameTableIndex >= count)
        {
            throw new ElfFormatException($"section name table index {nameTableIndex} is not below the section count " +
                $"{count}", 62);
        }

        sectionNameTableIndex = (int)nameTableIndex;
    }

    private void ReadSectionHeaders(ulong tableOffset, int count)
    {
        _headers = new RawSectionHeader[count];
        for (int i = 0; i < count; i++)
        {
            long at = (long)tableOffset + (long)i * ElfConstants.SectionHeaderSize;
            var entry = _image.AsSpan((int)at, ElfConstants.SectionHeaderSize);
            _headers[i] = new RawSectionHeader(
                HeaderOffset: at,
                Name: BinaryPrimitives.ReadUInt32LittleEndian(entry),
                Type: BinaryPrimitives.ReadUInt32LittleEndian(entry[4..]),
                Flags: BinaryPrimitives.ReadUInt64LittleEndian(entry[8..]),
                Address: BinaryPrimitives.ReadUInt64LittleEndian(entry[16..]),
                Offset: BinaryPrimitives.ReadUInt64LittleEndian(entry[24..]),
                Size: BinaryPrimitives.ReadUInt64LittleEndian(entry[32..]),
                Link: BinaryPrimitives.ReadUInt32LittleEndian(entry[40..]),
                Info: BinaryPrimitives.ReadUInt32LittleEndian(entry[44..]),
                Alignment: BinaryPrimitives.ReadUInt64LittleEndian(entry[48..]),
                EntrySize: BinaryPrimitives.ReadUInt64LittleEndian(entry[56..]));
        }
    }

    /// <summary>
    /// Contents must lie inside the file and must not overlap each other, the ELF header or the section header table.
    /// </summary>
    private void CheckSectionExtents(ulong tableOffset)
    {
        ulong length = (ulong)_image.Length;
        var extents = new List<(ulong Start, ulong End, int Index)>(_headers.Length + 2)
        {
            (0, ElfConstants.FileHeaderSize, -1),
            (tableOffset, tableOffset + (ulong)_headers.Length * ElfConstants.SectionHeaderSize, -2),
        };

        for (int i = 1; i < _headers.Length; i++)
        {
            ref readonly var header = ref _headers[i];
            if (header.Alignment != 0 && (header.Alignment & (header.Alignment - 1)) != 0)
            {
                throw new ElfFormatException($"section [{i}] has alignment {header.Alignment}, which is not a power " +
                    "of two", header.HeaderOffset + 48);
            }

            if (header.Type == (uint)ElfSectionType.NoBits || header.Type == (uint)ElfSectionType.Null)
            {
                continue;
            }

            if (header.Offset > length || header.Size > length - header.Offset)
            {
                throw new ElfFormatException(
                    $"section [{i}] contents at 0x{header.Offset:x} of size 0x{header.Size:x} extend beyond the file " +
                    $"of 0x{length:x} bytes",
                    header.HeaderOffset + 24);
            }

            if (header.Size != 0)
            {
                extents.Add((header.Offset, header.Offset + header.Size, i));
            }
        }

        extents.Sort((a, b) => a.Start != b.Start ? a.Start.CompareTo(b.Start) : a.End.CompareTo(b.End));
        for (int i = 1; i < extents.Count; i++)
        {
            var previous = extents[i - 1];
            var current = extents[i];
            if (current.Start < previous.End)
            {
                throw new ElfFormatException(
                    $"{DescribeExtent(current.Index)} at 0x{current.Start:x} overlaps " +
                    $"{DescribeExtent(previous.Index)} ending at 0x{previous.End:x}",
                    (long)current.Start);
            }
        }
    }

    private static string DescribeExtent(int index) => index switch
    {
        -1 => "the ELF header",
        -2 => "the section header table",
        _ => $"section [{index}]",
    };

    private void CreateSections()
    {
        _sections = new ElfSection?[_headers.Length];
        for (int i = 1; i < _headers.Length; i++)
        {
            ref readonly var header = ref _headers[i];
            var type = (ElfSectionType)header.Type;
            ElfSection section = type switch
            {
                ElfSectionType.Null =>
                    throw new ElfFormatException($"section [{i}] has type SHT_NULL", header.HeaderOffset + 4),
                ElfSectionType.NoBits => new ElfNoBitsSection(string.Empty, header.Size),
                ElfSectionType.StringTable => new ElfStringTableSection(string.Empty, Contents(header)),
                ElfSectionType.SymbolTable => new ElfSymbolTableSection(string.Empty),
                ElfSectionType.SymbolTableSectionIndex => new ElfSymbolTableIndexSection(string.Empty),
                ElfSectionType.Rela => new ElfRelocationSection(string.Empty, null, null),
                ElfSectionType.Group => new ElfGroupSection(string.Empty, null, null),
                ElfSectionType.Note => new ElfNoteSection(string.Empty),
                _ => new ElfDataSection(string.Empty, type, Contents(header)),
            };

            section.Flags = (ElfSectionFlags)header.Flags;
            section.Address = header.Address;
            section.Alignment = header.Alignment;
            section.EntrySize = header.EntrySize;
            if (section is not (ElfSymbolTableSection or ElfRelocationSection or ElfGroupSection))
            {
                // Elsewhere sh_info is derived from the model when writing.
                section.Info = header.Info;
            }

            if (section is ElfNoteSection notes)
            {
                notes.ReadNotes(Contents(header), (long)header.Offset, i);
            }

            _sections[i] = section;
            _object.Sections.Add(section);
        }
    }

    private byte[] Contents(in RawSectionHeader header) =>
        _image.AsSpan((int)header.Offset, (int)header.Size).ToArray();

    private ReadOnlySpan<byte> ContentSpan(in RawSectionHeader header) =>
        _image.AsSpan((int)header.Offset, (int)header.Size);

    private void ReadNames(int nameTableIndex)
    {
        ElfStringTableSection? names = null;
        if (nameTableIndex != 0)
        {
            names = _sections[nameTableIndex] as ElfStringTableSection
                ?? throw new ElfFormatException($"section name table [{nameTableIndex}] is not a string table", 62);
        }

        _object.SectionNameTable = names;
        for (int i = 1; i < _headers.Length; i++)
        {
            ref readonly var header = ref _headers[i];
            var section = _sections[i]!;
            if (names is null && header.Name != 0)
            {
                throw new ElfFormatException(
                    $"section [{i}] has a name offset but the object has no section name table",
                    header.HeaderOffset);
            }

            section.Name = names is null ? string.Empty
                : GetString(names, header.Name, $"name of section [{i}]", header.HeaderOffset);
            section.Origin = new SectionOrigin(
                _object, i, header.Offset, section.OccupiesFile ? header.Size : 0, section.OccupiesFile, header.Name,
                    section.Name, names);
        }
    }

    private static string GetString(ElfStringTableSection table, uint offset, string what, long where)
    {
        try
        {
            return table.GetString(offset);
        }
        catch (ElfFormatException e)
        {
            throw new ElfFormatException($"{what}: {e.Message}", where);
        }
    }

    private ElfSection? SectionAt(uint index, int referrer, string field, long where)
    {
        if (index == 0)
        {
            return null;
        }

        if (index >= _sections.Length)
        {
            throw new ElfFormatException(
                $"section [{referrer}] '{_sections[referrer]!.Name}': {field} {index} is not a section index (the " +
                $"object has {_sections.Length} sections)", where);
        }

        return _sections[index];
    }

    private void ResolveLinks()
    {
        for (int i = 1; i < _headers.Length; i++)
        {
            ref readonly var header = ref _headers[i];
            var section = _sections[i]!;
            section.Link = SectionAt(header.Link, i, "sh_link", header.HeaderOffset + 40);
            string? expectedLink = section switch
            {
                ElfSymbolTableSection when section.Link is not ElfStringTableSection => "a string table",
                ElfRelocationSection or ElfGroupSection
                    or ElfSymbolTableIndexSection when section.Link is not ElfSymbolTableSection => "a symbol table",
                _ => null,
            };
            if (expectedLink is not null)
            {
                throw new ElfFormatException(
                    $"section [{i}] '{section.Name}': sh_link {header.Link} is not {expectedLink}", header.HeaderOffset
                        + 40);
            }

            if (section is ElfRelocationSection relocations)
            {
                relocations.Target = SectionAt(header.Info, i, "sh_info", header.HeaderOffset + 44);
            }
            else if (section is not (ElfSymbolTableSection or ElfGroupSection)
                && section.Flags.HasFlag(ElfSectionFlags.InfoLink))
            {
                section.InfoSection = SectionAt(header.Info, i, "sh_info", header.HeaderOffset + 44);
            }
        }
    }

    private void ReadSymbolTables()
    {
        // Extended index tables first, one per symbol table at most.
        var indexTables = new Dictionary<ElfSymbolTableSection, int>();
        for (int i = 1; i < _headers.Length; i++)
        {
            if (_sections[i] is ElfSymbolTableIndexSection indexSection)
            {
                ref readonly var header = ref _headers[i];
                if (header.Size % 4 != 0)
                {
                    throw new ElfFormatException($"extended index section [{i}] size {header.Size} is not a multiple " +
                        "of 4", header.HeaderOffset + 32);
                }

                if (!indexTables.TryAdd(indexSection.SymbolTable!, i))
                {
                    throw new ElfFormatException($"extended index section [{i}] is the second one for its symbol table",
                        header.HeaderOffset + 40);
                }
            }
        }

        for (int i = 1; i < _headers.Length; i++)
        {
            if (_sections[i] is ElfSymbolTableSection table)
            {
                ReadSymbols(i, table, indexTables.TryGetValue(table, out int indexSection) ? indexSection : 0);
            }
        }
    }

    private void ReadSymbols(int sectionIndex, ElfSymbolTableSection table, int indexSectionIndex)
    {
        ref readonly var header = ref _headers[sectionIndex];
        const int entrySize = ElfSymbolTableSection.EntrySizeInBytes;
        if (header.EntrySize != entrySize)
        {
            throw new ElfFormatException(
                $"symbol table [{sectionIndex}] has entry size {header.EntrySize}, expected 24",
                header.HeaderOffset + 56);
        }

        if (header.Size % entrySize != 0 || header.Size == 0)
        {
            throw new ElfFormatException($"symbol table [{sectionIndex}] size {header.Size} is not a positive " +
                "multiple of 24", header.HeaderOffset + 32);
        }

        var strings = (ElfStringTableSection)table.Link!;
        var contents = ContentSpan(header);
        ReadOnlySpan<byte> extendedIndexes = indexSectionIndex != 0 ? ContentSpan(_headers[indexSectionIndex])
            : default;
        int count = contents.Length / entrySize;
        for (int n = 1; n < count; n++)
        {
            var entry = contents.Slice(n * entrySize, entrySize);
            long where = (long)header.Offset + (long)n * entrySize;
            uint nameOffset = BinaryPrimitives.ReadUInt32LittleEndian(entry);
            var symbol = new ElfSymbol(GetString(strings, nameOffset, $"name of symbol {n} in [{sectionIndex}]", where))
            {
                Binding = (ElfSymbolBinding)(entry[4] >> 4),
                Type = (ElfSymbolType)(entry[4] & 0xf),
                Other = entry[5],
                Value = BinaryPrimitives.ReadUInt64LittleEndian(entry[8..]),
                Size = BinaryPrimitives.ReadUInt64LittleEndian(entry[16..]),
                OriginNameTable = strings,
                OriginNameOffset = nameOffset,
            };
            symbol.OriginName = symbol.Name;

            ushort shortIndex = BinaryPrimitives.ReadUInt16LittleEndian(entry[6..]);
            if (shortIndex == ElfConstants.ExtendedSectionIndex)
            {
                if (extendedIndexes.Length < (n + 1) * 4)
                {
                    throw new ElfFormatException(
                        $"symbol {n} in [{sectionIndex}] uses SHN_XINDEX but has no entry in an extended index section",
                            where + 6);
                }

                uint index = BinaryPrimitives.ReadUInt32LittleEndian(extendedIndexes[(n * 4)..]);
                symbol.Section = SectionAt(index, sectionIndex, $"extended section index of symbol {n}", where + 6)
                    ?? throw new ElfFormatException($"symbol {n} in [{sectionIndex}] has extended section index 0",
                        where + 6);
                symbol.ReadThroughExtendedIndex = true;
            }
            else if (shortIndex >= ElfConstants.ReservedSectionIndexStart || shortIndex == 0)
            {
                symbol.SpecialSection = (ElfSpecialSectionIndex)shortIndex;
            }
            else
            {
                symbol.Section = SectionAt(shortIndex, sectionIndex, $"section index of symbol {n}", where + 6);
            }

            table.Symbols.AddRead(symbol);
        }
    }

    private void ReadRelocationSections()
    {
        for (int i = 1; i < _headers.Length; i++)
        {
            if (_sections[i] is not ElfRelocationSection relocations)
            {
                continue;
            }

            ref readonly var header = ref _headers[i];
            const int entrySize = ElfRelocationSection.EntrySizeInBytes;
            if (header.EntrySize != entrySize)
            {
                throw new ElfFormatException($"relocation section [{i}] has entry size {header.EntrySize}, expected 24",
                    header.HeaderOffset + 56);
            }

            if (header.Size % entrySize != 0)
            {
                throw new ElfFormatException($"relocation section [{i}] size {header.Size} is not a multiple of 24",
                    header.HeaderOffset + 32);
            }

            var symbols = relocations.SymbolTable!.Symbols;
            var contents = ContentSpan(header);
            int count = contents.Length / entrySize;
            relocations.Relocations.Capacity = count;
            for (int n = 0; n < count; n++)
            {
                var entry = contents.Slice(n * entrySize, entrySize);
                ulong info = BinaryPrimitives.ReadUInt64LittleEndian(entry[8..]);
                ulong symbolIndex = info >> 32;
                if (symbolIndex > (ulong)symbols.Count)
                {
                    throw new ElfFormatException(
                        $"relocation {n} in [{i}] '{relocations.Name}' refers to symbol {symbolIndex}, but the " +
                        $"symbol table has {symbols.Count + 1} entries",
                        (long)header.Offset + (long)n * entrySize + 8);
                }

                relocations.Relocations.Add(new ElfRelocation(
                    BinaryPrimitives.ReadUInt64LittleEndian(entry),
                    (X86RelocationType)(uint)info,
                    symbolIndex == 0 ? null : symbols[(int)symbolIndex - 1],
                    BinaryPrimitives.ReadInt64LittleEndian(entry[16..])));
            }
        }
    }

    private void ReadGroups()
    {
        var memberOf = new Dictionary<ElfSection, int>();
        for (int i = 1; i < _headers.Length; i++)
        {
            if (_sections[i] is not ElfGroupSection group)
            {
                continue;
            }

            ref readonly var header = ref _headers[i];
            if (header.Size < 4 || header.Size % 4 != 0)
            {
                throw new ElfFormatException($"group section [{i}] size {header.Size} is not a positive multiple of 4",
                    header.HeaderOffset + 32);
            }

            var symbols = group.SymbolTable!.Symbols;
            if (header.Info > (uint)symbols.Count)
            {
                throw new ElfFormatException(
                    $"group section [{i}] signature symbol {header.Info} is outside the symbol table of " +
                    $"{symbols.Count + 1} entries", header.HeaderOffset + 44);
            }

            group.Signature = header.Info == 0 ? null : symbols[(int)header.Info - 1];
            var contents = ContentSpan(header);
            group.GroupFlags = (ElfGroupFlags)BinaryPrimitives.ReadUInt32LittleEndian(contents);
            for (int offset = 4; offset < contents.Length; offset += 4)
            {
                uint memberIndex = BinaryPrimitives.ReadUInt32LittleEndian(contents[offset..]);
                long where = (long)header.Offset + offset;
                var member = SectionAt(memberIndex, i, "member", where)
                    ?? throw new ElfFormatException($"group section [{i}] lists section 0 as a member", where);
                if (member is ElfGroupSection)
                {
                    throw new ElfFormatException($"group section [{i}] lists group section [{memberIndex}] as a member",
                        where);
                }

                if (!memberOf.TryAdd(member, i))
                {
                    throw new ElfFormatException($"section [{memberIndex}] is listed in group [{memberOf[member]}] " +
                        $"and again in group [{i}]", where);
                }

                group.Members.Add(member);
            }
        }
    }

    private readonly record struct RawSectionHeader(
        long HeaderOffset,
        uint Name,
        uint Type,
        ulong Flags,
        ulong Address,
        ulong Offset,
        ulong Size,
        uint Link,
        uint Info,
        ulong Alignment,
        ulong EntrySize);
}
