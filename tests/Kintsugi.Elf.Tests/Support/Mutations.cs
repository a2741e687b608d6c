using System.Buffers.Binary;

namespace Kintsugi.Elf.Tests.Support;

/// <summary>Malformed variants of a well-formed object, aimed at every structure the reader parses.</summary>
internal static class Mutations
{
    public sealed record Mutation(string Description, byte[] Bytes);

    private sealed record Section(int Index, long HeaderOffset, uint Type, ulong Offset, ulong Size);

    private static readonly ulong[] HugeValues =
    [
        0, 1, 2, 3, 7, 0xff, 0xff00, 0xfff1, 0xfffe, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff,
        0x100000000, 0x7fffffffffffffff, 0xffffffffffffffff, 0xfffffffffffffff0,
    ];

    public static IEnumerable<Mutation> All(string seedName, byte[] seed, int randomMutations, int randomSeed)
    {
        var sections = SectionsOf(seed);
        return Truncations(seed, sections)
            .Concat(HeaderFields(seed))
            .Concat(SectionHeaderFields(seed, sections))
            .Concat(EntryFields(seed, sections))
            .Concat(StringTerminators(seed, sections))
            .Concat(RandomBytes(seed, sections, randomMutations, randomSeed))
            .Select(m => m with { Description = $"{seedName}: {m.Description}" });
    }

    /// <summary>
    /// Cut at every boundary: the header's fields, each section header, each section's start and end, each table entry.
    /// </summary>
    private static IEnumerable<Mutation> Truncations(byte[] seed, List<Section> sections)
    {
        var lengths = new SortedSet<long>();
        for (long i = 0; i <= 64; i++)
        {
            lengths.Add(i);
        }

        long table = (long)BinaryPrimitives.ReadUInt64LittleEndian(seed.AsSpan(40));
        foreach (var section in sections)
        {
            lengths.Add(section.HeaderOffset);
            lengths.Add(section.HeaderOffset + 32);
            lengths.Add((long)section.Offset);
            lengths.Add((long)(section.Offset + section.Size));
            foreach (long entry in EntryStarts(section))
            {
                lengths.Add(entry);
            }
        }

        lengths.Add(table + (sections.Count + 1) * 64L);
        foreach (long length in lengths)
        {
            foreach (long cut in new[] { length - 1, length, length + 1 })
            {
                if (cut >= 0 && cut < seed.Length)
                {
                    yield return new Mutation($"truncated to {cut} bytes", seed[..(int)cut]);
                }
            }
        }
    }

    private static IEnumerable<Mutation> HeaderFields(byte[] seed)
    {
        (string Name, int Offset, int Size)[] fields =
        [
            ("e_ident[EI_CLASS]", 4, 1), ("e_ident[EI_DATA]", 5, 1), ("e_type", 16, 2), ("e_machine", 18, 2),
            ("e_phoff", 32, 8), ("e_shoff", 40, 8), ("e_ehsize", 52, 2), ("e_phnum", 56, 2),
            ("e_shentsize", 58, 2), ("e_shnum", 60, 2), ("e_shstrndx", 62, 2),
        ];
        foreach (var (name, offset, size) in fields)
        {
            foreach (ulong value in HugeValues)
            {
                yield return new Mutation($"{name} = 0x{value:x}", With(seed, offset, size, value));
            }
        }

        // The extended count and name table index in section header 0.
        long table = (long)BinaryPrimitives.ReadUInt64LittleEndian(seed.AsSpan(40));
        foreach (ulong value in HugeValues)
        {
            var extended = With(seed, 60, 2, 0);
            yield return new Mutation($"e_shnum = 0, sh[0].sh_size = 0x{value:x}",
                With(extended, (int)table + 32, 8, value));
            var extendedNames = With(seed, 62, 2, 0xffff);
            yield return new Mutation($"e_shstrndx = SHN_XINDEX, sh[0].sh_link = 0x{value:x}",
                With(extendedNames, (int)table + 40, 4, value));
        }
    }

    private static IEnumerable<Mutation> SectionHeaderFields(byte[] seed, List<Section> sections)
    {
        (string Name, int Offset, int Size)[] fields =
        [
            ("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 8), ("sh_offset", 24, 8), ("sh_size", 32, 8),
            ("sh_link", 40, 4), ("sh_info", 44, 4), ("sh_addralign", 48, 8), ("sh_entsize", 56, 8),
        ];
        ulong[] types = [0, 1, 2, 3, 4, 7, 8, 9, 17, 18, 0x70000001];
        foreach (var section in sections)
        {
            foreach (var (name, offset, size) in fields)
            {
                var values = name == "sh_type" ? types
                    : HugeValues.Concat([section.Size + 1, section.Size - 1, (ulong)seed.Length,
                    (ulong)seed.Length - section.Size + 1]);
                foreach (ulong value in values)
                {
                    yield return new Mutation($"section [{section.Index}] {name} = 0x{value:x}",
                        With(seed, (int)section.HeaderOffset + offset, size, value));
                }
            }
        }
    }

    /// <summary>Indexes and sizes inside symbols, relocations, group lists and notes.</summary>
    private static IEnumerable<Mutation> EntryFields(byte[] seed, List<Section> sections)
    {
        foreach (var section in sections)
        {
            var fields = section.Type switch
            {
                2 => new (string, int, int)[] { ("st_name", 0, 4), ("st_info", 4, 1), ("st_shndx", 6, 2) },
                4 => [("r_info symbol", 12, 4), ("r_info type", 8, 4)],
                17 => [("group entry", 0, 4)],
                18 => [("extended index", 0, 4)],
                7 => [("n_namesz", 0, 4), ("n_descsz", 4, 4)],
                _ => [],
            };
            int entryIndex = 0;
            foreach (long entry in EntryStarts(section).Take(40))
            {
                foreach (var (name, offset, size) in fields)
                {
                    if (entry + offset + size > (long)(section.Offset + section.Size))
                    {
                        continue;
                    }

                    foreach (ulong value in HugeValues)
                    {
                        yield return new Mutation(
                            $"section [{section.Index}] entry {entryIndex} {name} = 0x{value:x}",
                                With(seed, (int)entry + offset, size, value));
                    }
                }

                entryIndex++;
            }
        }
    }

    /// <summary>
    /// Every NUL of every string table replaced, one at a time (the last one leaves a string unterminated).
    /// </summary>
    private static IEnumerable<Mutation> StringTerminators(byte[] seed, List<Section> sections)
    {
        foreach (var section in sections.Where(s => s.Type == 3))
        {
            for (ulong i = 0; i < section.Size; i++)
            {
                if (seed[(int)(section.Offset + i)] == 0)
                {
                    var mutated = (byte[])seed.Clone();
                    mutated[(int)(section.Offset + i)] = (byte)'A';
                    yield return new Mutation($"section [{section.Index}] NUL at {i} replaced", mutated);
                }
            }
        }
    }

    /// <summary>Random bytes written into the header, the section headers and the tables.</summary>
    private static IEnumerable<Mutation> RandomBytes(byte[] seed, List<Section> sections, int count, int randomSeed)
    {
        var random = new Random(randomSeed);
        long table = (long)BinaryPrimitives.ReadUInt64LittleEndian(seed.AsSpan(40));
        var regions = new List<(long Start, long Length)> { (0, 64), (table, (sections.Count + 1) * 64L) };
        regions.AddRange(sections.Where(s => s.Type is 2 or 3 or 4 or 7 or 17 or 18)
            .Select(s => ((long)s.Offset, (long)s.Size)));
        for (int i = 0; i < count; i++)
        {
            var mutated = (byte[])seed.Clone();
            int flips = 1 + random.Next(4);
            var description = new List<string>();
            for (int f = 0; f < flips; f++)
            {
                var (start, length) = regions[random.Next(regions.Count)];
                if (length == 0)
                {
                    continue;
                }

                int at = (int)(start + random.NextInt64(length));
                byte value = random.Next(3) == 0 ? (byte)(mutated[at] ^ (1 << random.Next(8))) : (byte)random.Next(256);
                mutated[at] = value;
                description.Add($"[0x{at:x}]=0x{value:x2}");
            }

            yield return new Mutation($"random {string.Join(' ', description)}", mutated);
        }
    }

    private static IEnumerable<long> EntryStarts(Section section)
    {
        int entrySize = section.Type switch { 2 or 4 => 24, 17 or 18 => 4, _ => 0 };
        if (section.Type == 7)
        {
            yield return (long)section.Offset;
            yield break;
        }

        if (entrySize == 0)
        {
            yield break;
        }

        for (ulong at = 0; at < section.Size; at += (ulong)entrySize)
        {
            yield return (long)(section.Offset + at);
        }
    }

    private static List<Section> SectionsOf(byte[] seed)
    {
        long table = (long)BinaryPrimitives.ReadUInt64LittleEndian(seed.AsSpan(40));
        int count = BinaryPrimitives.ReadUInt16LittleEndian(seed.AsSpan(60));
        var sections = new List<Section>();
        for (int i = 1; i < count; i++)
        {
            var header = seed.AsSpan((int)(table + i * 64L), 64);
            sections.Add(new Section(
                i,
                table + i * 64L,
                BinaryPrimitives.ReadUInt32LittleEndian(header[4..]),
                BinaryPrimitives.ReadUInt64LittleEndian(header[24..]),
                BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) == 8 ? 0
                    : BinaryPrimitives.ReadUInt64LittleEndian(header[32..])));
        }

        return sections;
    }

    private static byte[] With(byte[] seed, int offset, int size, ulong value)
    {
        var mutated = (byte[])seed.Clone();
        var field = mutated.AsSpan(offset, size);
        switch (size)
        {
            case 1: field[0] = (byte)value; break;
            case 2: BinaryPrimitives.WriteUInt16LittleEndian(field, (ushort)value); break;
            case 4: BinaryPrimitives.WriteUInt32LittleEndian(field, (uint)value); break;
            default: BinaryPrimitives.WriteUInt64LittleEndian(field, value); break;
        }

        return mutated;
    }
}
