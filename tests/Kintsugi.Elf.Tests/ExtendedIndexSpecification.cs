using System.Text;
using Kintsugi.Elf.Tests.Support;
using Kintsugi.Testing;

namespace Kintsugi.Elf.Tests;

/// <summary>An assembled object with more than 0xff00 sections: e_shnum, e_shstrndx and st_shndx overflow.</summary>
public sealed class ManySectionsObject : IDisposable
{
    public const int Functions = 32700; // a .text.fN and .rela.text.fN each: 65400 sections

    public ManySectionsObject()
    {
        var source = new StringBuilder();
        for (int i = 0; i < Functions; i++)
        {
            source.Append(".section .text.f").Append(i).Append(",\"ax\",@progbits\n.globl f").Append(i)
                .Append("\nf").Append(i).Append(":\n call f").Append((i + 1) % Functions).Append("\n ret\n");
        }

        Path = Temp.Write("many.s", source.ToString()).Replace(".s", ".o", StringComparison.Ordinal);
        Tool.RunIn(Temp.Path, "as", Temp.File("many.s"), "-o", Path);
        Bytes = File.ReadAllBytes(Path);
    }

    internal TemporaryDirectory Temp { get; } = new();

    public string Path { get; }

    public byte[] Bytes { get; }

    public void Dispose() => Temp.Dispose();
}

public sealed class ExtendedIndexSpecification(ManySectionsObject many)
    : IClassFixture<ManySectionsObject>, IDisposable
{
    private readonly TemporaryDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Object_with_more_than_0xff00_sections_round_trips_byte_identical()
    {
        var elf = ElfObject.Read(many.Bytes);

        Assert.True(elf.Sections.Count + 1 > 0xff00);
        Assert.Equal(many.Bytes, elf.ToArray());
    }

    [Fact]
    public void Symbols_beyond_0xff00_resolve_through_symtab_shndx()
    {
        var elf = ElfObject.Read(many.Bytes);
        var expected = Readelf.Symbols(many.Path).ToDictionary(s => s.Name);

        var last = elf.SymbolTable!.Find($"f{ManySectionsObject.Functions - 1}")!;

        Assert.Equal($".text.f{ManySectionsObject.Functions - 1}", last.Section!.Name);
        Assert.True(last.Section.Index >= 0xff00);
        Assert.Equal(expected[last.Name].SectionIndex,
            last.Section.Index.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Single(elf.Sections.OfType<ElfSymbolTableIndexSection>());
        Assert.True(elf.SectionNameTable!.Index >= 0xff00);
    }

    [Fact]
    public void Relaid_object_with_more_than_0xff00_sections_is_accepted_by_readelf_and_ld()
    {
        var elf = ElfObject.Read(many.Bytes);
        elf.SymbolTable!.Find("f0")!.Name = "renamed_f0";
        string path = _temp.File("relaid.o");
        elf.Save(path);

        var readelf = Tool.TryRunIn(null, "readelf", "-hSsW", path);
        Tool.Run("ld", "-r", path, "-o", _temp.File("linked.o"));

        Assert.Equal(0, readelf.ExitCode);
        Assert.Empty(readelf.Error);
        Assert.Contains($"Number of section headers:         0 ({elf.Sections.Count + 1})", readelf.Output,
            StringComparison.Ordinal);
        Assert.Equal(RoundTripSpecification.Describe(elf), RoundTripSpecification.Describe(ElfObject.Load(path)));
    }

    [Fact]
    public void Removing_sections_below_0xff00_writes_plain_indexes()
    {
        var elf = ElfObject.Read(many.Bytes);
        var doomed = elf.SymbolTable!.Symbols
            .Where(s => s.Name.StartsWith('f')
                && int.Parse(s.Name.AsSpan(1),
                System.Globalization.CultureInfo.InvariantCulture) >= ManySectionsObject.Functions / 2)
            .ToList();
        elf.RemoveSections(doomed.Select(s => s.Section!));
        doomed.ForEach(s => s.SpecialSection = ElfSpecialSectionIndex.Undefined);

        string path = _temp.File("smaller.o");
        elf.Save(path);
        var readelf = Tool.Run("readelf", "-hsW", path);

        Assert.Contains($"Number of section headers:         {elf.Sections.Count + 1}\n", readelf,
            StringComparison.Ordinal);
        Assert.Matches($@"GLOBAL DEFAULT\s+UND f{ManySectionsObject.Functions - 1}\n", readelf);
        Tool.Run("ld", "-r", path, "-o", _temp.File("linked.o"));
    }

    [Fact]
    public void Growing_past_0xff00_sections_adds_symtab_shndx()
    {
        var elf = ElfObject.Load(CompiledSamples.PathOf("O2"));
        ElfSection last = null!;
        for (int i = 0; i < 0xff00; i++)
        {
            last = new ElfDataSection($".data.k{i}", ElfSectionType.ProgBits, [(byte)i])
            { Flags = ElfSectionFlags.Alloc | ElfSectionFlags.Write, Alignment = 1 };
            elf.Sections.Add(last);
        }

        elf.SymbolTable!.Symbols.Add(new ElfSymbol("in_last_section")
        {
            Binding = ElfSymbolBinding.Global,
            Type = ElfSymbolType.Object,
            Section = last,
            Size = 1
        });
        string path = _temp.File("grown.o");
        elf.Save(path);

        var reread = ElfObject.Load(path);
        Tool.Run("ld", "-r", path, "-o", _temp.File("linked.o"));

        Assert.Single(reread.Sections.OfType<ElfSymbolTableIndexSection>());
        Assert.Equal(".data.k65279", reread.SymbolTable!.Find("in_last_section")!.Section!.Name);
        Assert.Matches(@"OBJECT\s+GLOBAL DEFAULT\s+\d{5} in_last_section", Tool.Run("readelf", "-sW", path));
    }
}
