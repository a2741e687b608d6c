using System.Buffers.Binary;
using System.Text;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>
/// Where the kallsyms tables lie in a vmlinux file (file offsets), as <see cref="ImageKallsyms"/> found them.
/// <see cref="SeqsOfNames"/> is null on kernels before 6.1, which have no index sorted by name.
/// </summary>
public sealed record KallsymsLayout(int SymbolCount, int NumSyms, int Names, int Markers, int TokenTable,
    int TokenIndex, int Offsets, int RelativeBase, int? SeqsOfNames, bool AbsolutePercpu);

/// <summary>
/// The complete vmlinux symbol table of a kernel read from its own kallsyms tables, which scripts/kallsyms.c
/// wrote into the image's .rodata: what /proc/kallsyms lists for vmlinux (names, type letters, link-time addresses,
/// in the kernel's order, which sympos counts in) without booting the kernel and without its debug package.
/// </summary>
/// <remarks>
/// No symbol of the stripped image points at the tables, and their order in .rodata changed in 6.1 and again in
/// 6.2, so they are found by their shapes: the token table, whose single-character tokens include the digits in
/// order, with the 256 offsets of the token index after it; the markers (every 256th name's offset) ending right
/// before it or before the name index; the symbol count and the names stream before the markers; the address
/// offsets and their base before the count (up to 6.1) or after the token index (6.2 and later). A candidate is
/// accepted only when every table agrees with the others: the names stream walks exactly onto every marker, each
/// name starts with a type letter, addresses ascend from a base that only the lowest symbol sits on, the
/// name-sorted index (6.1 and later) is a permutation that sorts the names, and every exported symbol of the
/// image's own export tables (__ksymtab, __ksymtab_gpl) is in the table at its exported address. Otherwise
/// nothing is returned: <see cref="ImageKallsymsException"/> says which check failed.
/// </remarks>
public sealed class ImageKallsyms
{
    private const int TokenCount = 256;
    private const int Alignment = 8; // scripts/kallsyms.c aligns every table to 8 bytes on 64-bit kernels
    /// <summary>A compressed name is at most one byte per character of the longest name the kernel keeps
    /// (KSYM_NAME_LEN, 512 since 6.1), plus its two length bytes; the bound is kept loose.</summary>
    private const int MaxEntryBytes = 2 + 1024;
    /// <summary>Every symbol takes at least two bytes of the names stream (its length and one token).</summary>
    private const int MinEntryBytes = 2;
    private const int KernelSymbolSize = 12; // struct kernel_symbol with 32-bit relative offsets (x86-64)

    public KallsymsLayout Layout { get; }
    public KernelSymbolTable Symbols { get; }

    private ImageKallsyms(KallsymsLayout layout, KernelSymbolTable symbols)
    {
        Layout = layout;
        Symbols = symbols;
    }

    /// <summary>Finds, decodes and cross-checks the kallsyms tables of a vmlinux.</summary>
    /// <exception cref="ImageKallsymsException">The tables are not there, or they disagree with each other or with
    /// the image's export table.</exception>
    public static ImageKallsyms Read(VmlinuxImage image)
    {
        var file = image.Bytes;
        var tokenTables = FindTokenTables(file);
        if (tokenTables.Count == 0)
            throw new ImageKallsymsException("no kallsyms token table in the image (no 256 tokens with the digits " +
                "\"0\" to \"9\" in order and a token index that agrees)");
        var found = new List<ImageKallsyms>();
        var deepest = "";
        foreach (var tokens in tokenTables)
        {
            var streams = FindNameStreams(file, tokens);
            if (streams.Count == 0)
            {
                deepest = $"the token table at file offset 0x{tokens.Offset:x} has no symbol count, names and " +
                    "markers before it that agree with each other";
                continue;
            }
            foreach (var stream in streams)
            {
                var names = DecodeNames(file, stream, tokens);
                if (names is null)
                {
                    deepest = $"a name of the {stream.Count} kallsyms entries at file offset 0x{stream.Names:x} " +
                        "does not start with a symbol type letter";
                    continue;
                }
                var addressTables = FindAddressTables(image, stream, tokens);
                if (addressTables.Count == 0)
                {
                    deepest = $"no kallsyms address offsets that ascend from their base agree with the " +
                        $"{stream.Count} names at file offset 0x{stream.Names:x}";
                    continue;
                }
                foreach (var addresses in addressTables)
                {
                    if (SeqsDisagreement(file, addresses.SeqsOfNames ?? stream.SeqsBeforeTokens, names)
                        is { } seqsProblem)
                    {
                        deepest = seqsProblem;
                        continue;
                    }
                    var table = Table(names, addresses.Values);
                    if (ExportDisagreement(image, table) is { } exportProblem)
                    {
                        deepest = exportProblem;
                        continue;
                    }
                    found.Add(new ImageKallsyms(new KallsymsLayout(stream.Count, stream.NumSyms, stream.Names,
                        stream.Markers, tokens.Offset, tokens.IndexOffset, addresses.Offsets, addresses.RelativeBase,
                        addresses.SeqsOfNames ?? stream.SeqsBeforeTokens, addresses.AbsolutePercpu), table));
                }
            }
        }
        return found.Count switch
        {
            1 => found[0],
            0 => throw new ImageKallsymsException(deepest),
            _ => throw new ImageKallsymsException($"{found.Count} different sets of kallsyms tables agree within " +
                "the image: which one the kernel uses cannot be told"),
        };
    }

    /// <summary>The token table (256 NUL-terminated strings) and the token index (256 u16 offsets into it) right
    /// after it.</summary>
    private sealed record TokenTable(int Offset, int IndexOffset, IReadOnlyList<byte[]> Tokens);

    /// <summary>kallsyms_num_syms, the names stream after it, the markers after that, and (6.1's order) the
    /// name-sorted index between the markers and the token table.</summary>
    private sealed record NameStream(int NumSyms, int Count, int Names, int Markers, int? SeqsBeforeTokens);

    /// <summary>kallsyms_offsets and kallsyms_relative_base decoded to addresses, and the name-sorted index that
    /// follows the base in 6.2's order.</summary>
    private sealed record AddressTable(int Offsets, int RelativeBase, int? SeqsOfNames, bool AbsolutePercpu,
        ulong[] Values);

    private static List<TokenTable> FindTokenTables(ReadOnlySpan<byte> file)
    {
        // Every digit occurs in some symbol name, so each is its own single-character token, at its own index.
        Span<byte> digits = stackalloc byte[20];
        for (var d = 0; d < 10; d++)
        {
            digits[2 * d] = (byte)('0' + d);
            digits[2 * d + 1] = 0;
        }
        var tables = new List<TokenTable>();
        for (var at = file.IndexOf(digits); at >= 0;)
        {
            if (TokenTableAround(file, at) is { } table) tables.Add(table);
            var next = file[(at + 1)..].IndexOf(digits);
            at = next < 0 ? -1 : at + 1 + next;
        }
        return tables;
    }

    /// <summary>The token table whose token '0' lies at <paramref name="zero"/>, if a token index that places it
    /// there follows the table.</summary>
    private static TokenTable? TokenTableAround(ReadOnlySpan<byte> file, int zero)
    {
        const int MaxTableBytes = 0x10000; // 256 tokens of a few characters each
        Span<int> index = stackalloc int[TokenCount];
        for (var indexOffset = Align(zero + 20); indexOffset <= zero + MaxTableBytes
            && indexOffset + 2 * TokenCount <= file.Length; indexOffset += Alignment)
        {
            if (BinaryPrimitives.ReadUInt16LittleEndian(file[indexOffset..]) != 0) continue;
            var ascending = true;
            for (var i = 0; i < TokenCount && ascending; i++)
            {
                index[i] = BinaryPrimitives.ReadUInt16LittleEndian(file[(indexOffset + 2 * i)..]);
                ascending = i == 0 || index[i] > index[i - 1];
            }
            var start = zero - index['0'];
            if (!ascending || start < 0 || start % Alignment != 0) continue;
            var tokens = new byte[TokenCount][];
            var end = start;
            for (var i = 0; i < TokenCount; i++)
            {
                var token = file[(start + index[i])..];
                var length = token.IndexOf((byte)0);
                if (length <= 0 || (i + 1 < TokenCount && index[i] + length + 1 != index[i + 1])) break;
                tokens[i] = token[..length].ToArray();
                end = start + index[i] + length + 1;
            }
            if (tokens[TokenCount - 1] is not null && Align(end) == indexOffset)
                return new TokenTable(start, indexOffset, tokens);
        }
        return null;
    }

    private static List<NameStream> FindNameStreams(ReadOnlySpan<byte> file, TokenTable tokens)
    {
        var streams = new List<NameStream>();
        var maxCount = tokens.Offset / MinEntryBytes;
        // Up to 6.0 and from 6.2 on, the markers end right before the token table.
        for (var blocks = 1; blocks <= (maxCount + 255) / 256; blocks++)
        {
            var markers = tokens.Offset - Align(4 * blocks);
            if (markers < 0) break;
            if (MarkersAt(file, markers, blocks))
                streams.AddRange(NameStreamsBefore(file, markers, blocks, count: null, seqs: null));
        }
        // In 6.1 the name-sorted index (three bytes per symbol) lies between the markers and the token table.
        for (var count = 1; count <= maxCount; count++)
        {
            var seqs = tokens.Offset - Align(3 * count);
            var blocks = (count + 255) / 256;
            var markers = seqs - Align(4 * blocks);
            if (markers < 0) break;
            if (MarkersAt(file, markers, blocks))
                streams.AddRange(NameStreamsBefore(file, markers, blocks, count, seqs));
        }
        return streams;
    }

    /// <summary>Whether <paramref name="blocks"/> markers at <paramref name="offset"/> can be the offsets of every
    /// 256th name: from 0, each 256 names further on.</summary>
    private static bool MarkersAt(ReadOnlySpan<byte> file, int offset, int blocks)
    {
        if (BinaryPrimitives.ReadUInt32LittleEndian(file[offset..]) != 0) return false;
        var previous = 0u;
        for (var k = 1; k < blocks; k++)
        {
            var marker = BinaryPrimitives.ReadUInt32LittleEndian(file[(offset + 4 * k)..]);
            if (marker < previous + 256 * MinEntryBytes || marker > previous + 256 * MaxEntryBytes) return false;
            previous = marker;
        }
        return true;
    }

    /// <summary>The symbol counts before the markers whose names stream (right after the count) walks onto every
    /// marker and ends right before the markers.</summary>
    private static IEnumerable<NameStream> NameStreamsBefore(ReadOnlySpan<byte> file, int markers, int blocks,
        int? count, int? seqs)
    {
        var streams = new List<NameStream>();
        var lastMarker = (int)BinaryPrimitives.ReadUInt32LittleEndian(file[(markers + 4 * (blocks - 1))..]);
        // The last block holds 1 to 256 names; the names start 8 bytes after the (aligned) count.
        var highest = AlignDown(markers - lastMarker - MinEntryBytes - Alignment);
        var lowest = markers - Alignment - lastMarker - 256 * MaxEntryBytes - Alignment;
        for (var numSyms = highest; numSyms >= Math.Max(lowest, 0); numSyms -= Alignment)
        {
            var candidate = BinaryPrimitives.ReadUInt32LittleEndian(file[numSyms..]);
            if (candidate == 0 || candidate > int.MaxValue || (candidate + 255) / 256 != blocks
                || (count is { } exact && candidate != exact)) continue;
            if (NamesWalkOntoMarkers(file, numSyms + Alignment, (int)candidate, markers))
                streams.Add(new NameStream(numSyms, (int)candidate, numSyms + Alignment, markers, seqs));
        }
        return streams;
    }

    private static bool NamesWalkOntoMarkers(ReadOnlySpan<byte> file, int names, int count, int markers)
    {
        var at = names;
        for (var i = 0; i < count; i++)
        {
            if ((i & 0xFF) == 0
                && BinaryPrimitives.ReadUInt32LittleEndian(file[(markers + 4 * (i >> 8))..]) != at - names)
                return false;
            if (!TryEntryLength(file, ref at, markers, out var length)) return false;
            at += length;
            if (at > markers) return false;
        }
        return Align(at) == markers && !file[at..markers].ContainsAnyExcept((byte)0);
    }

    /// <summary>Reads one entry's length: one byte, or (6.1 and later) two when the first has its top bit
    /// set.</summary>
    private static bool TryEntryLength(ReadOnlySpan<byte> file, ref int at, int limit, out int length)
    {
        length = file[at++];
        if ((length & 0x80) != 0)
        {
            if (at >= limit) return false;
            length = (length & 0x7F) | (file[at++] << 7);
        }
        return length > 0;
    }

    /// <summary>Each entry expanded through the tokens: its first character is the type letter, the rest the name.
    /// Null when an entry does not start with a letter.</summary>
    private static (char Type, string Name)[]? DecodeNames(ReadOnlySpan<byte> file, NameStream stream,
        TokenTable tokens)
    {
        var names = new (char, string)[stream.Count];
        var buffer = new byte[MaxEntryBytes * 64];
        var at = stream.Names;
        for (var i = 0; i < stream.Count; i++)
        {
            TryEntryLength(file, ref at, stream.Markers, out var length);
            var expanded = 0;
            foreach (var code in file.Slice(at, length))
            {
                var token = tokens.Tokens[code];
                if (expanded + token.Length > buffer.Length) Array.Resize(ref buffer, buffer.Length * 2);
                token.CopyTo(buffer, expanded);
                expanded += token.Length;
            }
            at += length;
            if (!char.IsAsciiLetter((char)buffer[0])) return null;
            names[i] = ((char)buffer[0], Encoding.UTF8.GetString(buffer, 1, expanded - 1));
        }
        return names;
    }

    /// <summary>The address tables that agree with the names: right before the count (up to 6.1) or right after the
    /// token index (6.2 and later, followed by the name-sorted index).</summary>
    private static List<AddressTable> FindAddressTables(VmlinuxImage image, NameStream stream, TokenTable tokens)
    {
        var tables = new List<AddressTable>();
        var before = stream.NumSyms - Alignment;
        if (AddressesAt(image, before - Align(4 * stream.Count), before, stream.Count, seqs: null) is { } early)
            tables.Add(early);
        var after = tokens.IndexOffset + 2 * TokenCount;
        var baseAfter = Align(after + 4 * stream.Count);
        if (AddressesAt(image, after, baseAfter, stream.Count, seqs: baseAfter + Alignment) is { } late)
            tables.Add(late);
        return tables;
    }

    /// <summary>
    /// Decodes kallsyms_offsets against kallsyms_relative_base. With KALLSYMS_ABSOLUTE_PERCPU (x86-64 up to 6.14) an
    /// offset of 0 or more is the address itself (per-CPU symbols) and a negative one counts down from the base
    /// minus one; otherwise every offset is unsigned from the base. Only the absolute form has negative offsets (the
    /// image spans less than 2 GiB). The table is accepted when the addresses ascend, as scripts/kallsyms.c sorts
    /// them, and the lowest relative symbol sits exactly on the base, as it chose it.
    /// </summary>
    private static AddressTable? AddressesAt(VmlinuxImage image, int offsets, int relativeBase, int count, int? seqs)
    {
        var file = image.Bytes.AsSpan();
        if (offsets < 0 || relativeBase + 8 > file.Length || (seqs is { } s && s + 3L * count > file.Length))
            return null;
        var baseAddress = BinaryPrimitives.ReadUInt64LittleEndian(file[relativeBase..]);
        if (image.FileOffsetOf(baseAddress) is null) return null;
        var raw = file.Slice(offsets, 4 * count);
        var absolutePercpu = false;
        for (var i = 0; i < count && !absolutePercpu; i++)
            absolutePercpu = BinaryPrimitives.ReadInt32LittleEndian(raw[(4 * i)..]) < 0;
        var values = new ulong[count];
        var onBase = false;
        for (var i = 0; i < count; i++)
        {
            var offset = BinaryPrimitives.ReadInt32LittleEndian(raw[(4 * i)..]);
            values[i] = !absolutePercpu ? baseAddress + (uint)offset
                : offset >= 0 ? (ulong)offset
                : baseAddress - 1 - (ulong)(long)offset;
            onBase |= absolutePercpu ? offset == -1 : offset == 0;
            if (i > 0 && values[i] < values[i - 1]) return null;
        }
        return onBase ? new AddressTable(offsets, relativeBase, seqs, absolutePercpu, values) : null;
    }

    /// <summary>Why kallsyms_seqs_of_names (three big-endian bytes per symbol: its index, in name order) disagrees
    /// with the names, or null when it is a permutation that sorts them (or the kernel has none).</summary>
    private static string? SeqsDisagreement(ReadOnlySpan<byte> file, int? seqs, (char Type, string Name)[] names)
    {
        if (seqs is not { } start) return null;
        var seen = new bool[names.Length];
        string? previous = null;
        for (var i = 0; i < names.Length; i++)
        {
            var at = start + 3 * i;
            var index = (file[at] << 16) | (file[at + 1] << 8) | file[at + 2];
            if (index >= names.Length || seen[index])
                return $"the name-sorted kallsyms index at file offset 0x{start:x} is not a permutation of the " +
                    $"{names.Length} symbols";
            seen[index] = true;
            var name = names[index].Name;
            if (previous is not null && string.CompareOrdinal(previous, name) > 0)
                return $"the name-sorted kallsyms index at file offset 0x{start:x} puts {previous} before {name}: " +
                    "the names were decoded wrongly";
            previous = name;
        }
        return null;
    }

    private static KernelSymbolTable Table((char Type, string Name)[] names, ulong[] addresses)
    {
        var symbols = new List<KernelSymbol>(names.Length);
        for (var i = 0; i < names.Length; i++)
            // /proc/kallsyms leaves out nameless entries (kernel/kallsyms.c, s_show).
            if (names[i].Name.Length > 0) symbols.Add(new KernelSymbol(addresses[i], names[i].Type, names[i].Name));
        return new KernelSymbolTable(KernelObjectNames.Vmlinux, SymbolTableSource.ImageKallsyms, symbols);
    }

    /// <summary>
    /// Why the decoded table disagrees with the image's export tables, an independent record of names and
    /// addresses, or null when every exported symbol is in it at its exported address. Each struct kernel_symbol
    /// holds 32-bit offsets, relative to each field, to the symbol, its name and its namespace.
    /// </summary>
    private static string? ExportDisagreement(VmlinuxImage image, KernelSymbolTable table)
    {
        ElfSectionTable sections;
        try { sections = ElfSectionTable.Read(image.Bytes); }
        catch (InvalidDataException e) { return $"the image's section table cannot be read: {e.Message}"; }
        var file = image.Bytes.AsSpan();
        var checkedExports = 0;
        foreach (var name in (string[])["__ksymtab", "__ksymtab_gpl"])
        {
            if (sections.Find(name) is not { } section || section.Size == 0) continue;
            if (section.Size % KernelSymbolSize != 0 || image.AddressAt((long)section.Offset) is not { } address)
                return $"the image's {name} is not a table of {KernelSymbolSize}-byte entries in a loaded segment";
            for (var entry = 0UL; entry < section.Size; entry += KernelSymbolSize)
            {
                var fields = file.Slice((int)(section.Offset + entry), KernelSymbolSize);
                var at = address + entry;
                var value = at + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(fields);
                var nameAt = image.FileOffsetOf(
                    at + 4 + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(fields[4..]));
                var nameLength = nameAt is { } n ? file[(int)n..].IndexOf((byte)0) : -1;
                if (nameLength <= 0) return $"an entry of the image's {name} names no string";
                var exported = Encoding.UTF8.GetString(file.Slice((int)nameAt!.Value, nameLength));
                if (!table.Named(exported).Any(s => s.Address == value))
                    return $"the decoded kallsyms has no {exported} at {value:x}, where the image's {name} exports it";
                checkedExports++;
            }
        }
        return checkedExports == 0 ? "the image has no export table to check the decoded names against" : null;
    }

    private static int Align(int offset) => (offset + Alignment - 1) & ~(Alignment - 1);
    private static int AlignDown(int offset) => offset & ~(Alignment - 1);
}

/// <summary>The kallsyms tables of a vmlinux image could not be found, or disagree with each other or with the
/// image's export table: no symbol table was read from the image.</summary>
public sealed class ImageKallsymsException(string message) : KintsugiException(message)
{
    public override ExitCode ExitCode => ExitCode.InputRefused;
}
