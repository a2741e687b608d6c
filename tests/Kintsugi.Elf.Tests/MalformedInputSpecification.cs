using Kintsugi.Elf.Tests.Support;
using Xunit.Abstractions;

namespace Kintsugi.Elf.Tests;

/// <summary>
/// Malformed input ends in <see cref="ElfFormatException"/> or reads as a valid object, in bounded memory.
/// How fast is measured by bench/elf (docs/benchmarks.md), not here.
/// </summary>
public class MalformedInputSpecification(ITestOutputHelper output)
{
    [Theory]
    [InlineData("sections", 1)]
    [InlineData("cpp", 2)]
    [InlineData("cet", 3)]
    public void Every_mutation_fails_with_ElfFormatException_or_reads_and_writes(string variant, int randomSeed)
    {
        byte[] seed = CompiledSamples.BytesOf(variant);
        int rejected = 0, accepted = 0;
        var failures = new List<string>();

        foreach (var mutation in Mutations.All(variant, seed, randomMutations: 3000, randomSeed))
        {
            long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
            string? failure = Check(mutation.Bytes, ref rejected, ref accepted);
            long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
            // Reading, writing and re-reading hold a few copies of the file; never what a header claims.
            if (allocated > 64L * mutation.Bytes.Length + (1 << 20))
            {
                failure ??= $"allocated {allocated} bytes for a {mutation.Bytes.Length}-byte input";
            }

            if (failure is not null)
            {
                failures.Add($"{mutation.Description}: {failure}");
            }
        }

        output.WriteLine($"{variant}: {rejected} rejected, {accepted} accepted");
        Assert.Empty(failures.Take(10));
        Assert.True(rejected + accepted > 2000, $"only {rejected + accepted} mutations");
    }

    private static string? Check(byte[] input, ref int rejected, ref int accepted)
    {
        ElfObject elf;
        try
        {
            elf = ElfObject.Read(input);
        }
        catch (ElfFormatException e)
        {
            rejected++;
            return e.InnerException is null ? null : $"validation gap: {e.Message}";
        }
        catch (Exception e)
        {
            return $"read threw {e.GetType().Name}: {e.Message}";
        }

        accepted++;
        try
        {
            byte[] written = elf.ToArray();
            byte[] rewritten = ElfObject.Read(written).ToArray();
            return written.AsSpan().SequenceEqual(rewritten) ? null
                : "writing what was read again gives different bytes";
        }
        catch (Exception e)
        {
            return $"accepted, but writing or re-reading threw {e.GetType().Name}: {e.Message}";
        }
    }

    [Fact]
    public void Empty_input_is_rejected_as_too_short()
        => AssertRejected([], "too short");

    [Fact]
    public void Non_elf_input_is_rejected_for_its_magic()
        => AssertRejected(new byte[64], "bad magic");

    [Theory]
    [InlineData(4, 1, "ELF class 1")]
    [InlineData(5, 2, "little-endian")]
    [InlineData(16, 2, "ET_REL")]
    [InlineData(18, 3, "x86-64")]
    public void Unsupported_kinds_of_elf_are_rejected_by_name(int offset, byte value, string expected)
    {
        byte[] input = CompiledSamples.BytesOf("O2");
        input[offset] = value;

        AssertRejected(input, expected);
    }

    [Fact]
    public void Section_header_table_beyond_the_end_is_rejected()
    {
        byte[] input = CompiledSamples.BytesOf("O2");
        BitConverter.TryWriteBytes(input.AsSpan(40), (ulong)input.Length);

        AssertRejected(input, "outside the file");
    }

    [Fact]
    public void Section_count_larger_than_the_file_is_rejected_without_allocating_it()
    {
        byte[] input = CompiledSamples.BytesOf("O2");
        BitConverter.TryWriteBytes(input.AsSpan(60), (ushort)0);
        long table = BitConverter.ToInt64(input, 40);
        BitConverter.TryWriteBytes(input.AsSpan((int)table + 32), ulong.MaxValue);

        AssertRejected(input, "claims 18446744073709551615 entries");
    }

    [Fact]
    public void Section_contents_beyond_the_end_are_rejected()
    {
        var (input, header) = SectionHeader("O2", ".text");
        BitConverter.TryWriteBytes(input.AsSpan(header + 32), 0x7fff_ffff_ffffUL);

        AssertRejected(input, "extend beyond the file");
    }

    [Fact]
    public void Overlapping_sections_are_rejected()
    {
        var (input, data) = SectionHeader("O2", ".data");
        long textOffset = BitConverter.ToInt64(input, SectionHeader("O2", ".text").Header + 24);
        BitConverter.TryWriteBytes(input.AsSpan(data + 24), textOffset);

        AssertRejected(input, "overlaps");
    }

    [Fact]
    public void String_table_without_terminator_is_rejected()
    {
        var (input, header) = SectionHeader("O2", ".strtab");
        long offset = BitConverter.ToInt64(input, header + 24);
        long size = BitConverter.ToInt64(input, header + 32);
        input[offset + size - 1] = (byte)'A';

        AssertRejected(input, "has no NUL terminator");
    }

    [Fact]
    public void Symbol_in_a_section_that_does_not_exist_is_rejected()
    {
        var (input, header) = SectionHeader("O2", ".symtab");
        long firstSymbol = BitConverter.ToInt64(input, header + 24) + 24;
        BitConverter.TryWriteBytes(input.AsSpan((int)firstSymbol + 6), (ushort)0xfe00);

        AssertRejected(input, "section index of symbol 1");
    }

    [Fact]
    public void Relocation_against_a_symbol_that_does_not_exist_is_rejected()
    {
        var (input, header) = SectionHeader("O2", ".rela.text");
        long first = BitConverter.ToInt64(input, header + 24);
        BitConverter.TryWriteBytes(input.AsSpan((int)first + 12), 100_000u);

        AssertRejected(input, "refers to symbol 100000");
    }

    [Fact]
    public void Group_listing_itself_is_rejected()
    {
        var (input, header) = SectionHeader("cpp", ".group");
        long first = BitConverter.ToInt64(input, header + 24);
        BitConverter.TryWriteBytes(input.AsSpan((int)first + 4), 1u); // the first .group is section 1

        AssertRejected(input, "lists group section [1]");
    }

    [Fact]
    public void Relocation_section_whose_link_is_not_a_symbol_table_is_rejected()
    {
        var (input, header) = SectionHeader("O2", ".rela.text");
        BitConverter.TryWriteBytes(input.AsSpan(header + 40), 1u);

        AssertRejected(input, "is not a symbol table");
    }

    [Fact]
    public void Note_larger_than_its_section_is_rejected()
    {
        var (input, header) = SectionHeader("cet", ".note.gnu.property");
        long first = BitConverter.ToInt64(input, header + 24);
        BitConverter.TryWriteBytes(input.AsSpan((int)first + 4), 0xffff_fff0u);

        AssertRejected(input, "beyond the section");
    }

    private static void AssertRejected(byte[] input, string expected)
    {
        var error = Assert.Throws<ElfFormatException>(() => ElfObject.Read(input));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.Null(error.InnerException);
    }

    /// <summary>
    /// A fresh copy of a sample and the file offset of the header of its section named <paramref name="name"/>.
    /// </summary>
    private static (byte[] Input, int Header) SectionHeader(string variant, string name)
    {
        byte[] input = CompiledSamples.BytesOf(variant);
        var section = ElfObject.Read(input).FindSection(name)!;
        long table = BitConverter.ToInt64(input, 40);
        return (input, (int)(table + section.Index * 64L));
    }
}
