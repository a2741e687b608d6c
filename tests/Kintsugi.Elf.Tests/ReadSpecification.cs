using System.Globalization;
using Kintsugi.Elf.Tests.Support;

namespace Kintsugi.Elf.Tests;

/// <summary>
/// What the reader finds, checked against readelf and against what the compiler was asked to produce.
/// </summary>
public class ReadSpecification
{
    [Theory]
    [MemberData(nameof(CompiledSamples.Names), MemberType = typeof(CompiledSamples))]
    public void Symbols_match_readelf(string variant)
    {
        string path = CompiledSamples.PathOf(variant);
        var expected = Readelf.Symbols(path);

        var table = ElfObject.Load(path).SymbolTable!;

        Assert.Equal(expected.Count, table.Symbols.Count + 1);
        foreach (var symbol in table.Symbols)
        {
            var want = expected[symbol.Index];
            string where = $"symbol {symbol.Index} '{symbol.Name}'";
            Assert.True(want.Value == symbol.Value, $"{where}: value");
            Assert.True(want.Size == symbol.Size, $"{where}: size");
            Assert.Equal((where, want.Type), (where, TypeName(symbol.Type)));
            Assert.Equal((where, want.Binding), (where, BindingName(symbol.Binding)));
            Assert.Equal((where, want.Visibility), (where, symbol.Visibility.ToString().ToUpperInvariant()));
            Assert.Equal((where, want.SectionIndex), (where, SectionIndexName(symbol)));
            if (symbol.Type != ElfSymbolType.Section)
            {
                // readelf shows the section's name for section symbols, whose own name is empty.
                Assert.Equal((where, want.Name), (where, symbol.Name));
            }
        }
    }

    [Theory]
    [MemberData(nameof(CompiledSamples.Names), MemberType = typeof(CompiledSamples))]
    public void Relocations_match_readelf(string variant)
    {
        string path = CompiledSamples.PathOf(variant);
        var expected = Readelf.Relocations(path);

        var actual = ElfObject.Load(path).Sections.OfType<ElfRelocationSection>()
            .SelectMany(section => section.Relocations.Select(r => new Readelf.Relocation(
                section.Name,
                r.Offset,
                ((ulong)(r.Symbol?.Index ?? 0) << 32) | (uint)r.Type,
                string.Empty,
                r.Addend)))
            .ToList();

        Assert.NotEmpty(expected);
        Assert.Equal(expected.Select(r => r with { TypeName = string.Empty }), actual);
    }

    [Theory]
    [MemberData(nameof(CompiledSamples.Names), MemberType = typeof(CompiledSamples))]
    public void Relocation_sections_are_linked_to_the_section_they_patch(string variant)
    {
        var elf = ElfObject.Load(CompiledSamples.PathOf(variant));

        foreach (var relocations in elf.Sections.OfType<ElfRelocationSection>())
        {
            Assert.Equal(".rela" + relocations.Target!.Name, relocations.Name);
            Assert.Same(elf.SymbolTable, relocations.SymbolTable);
        }
    }

    [Fact]
    public void Relocation_types_name_what_the_code_model_needs()
    {
        var kernel = RelocationTypes("kernel");
        var pic = RelocationTypes("pic");

        // -mcmodel=kernel addresses data in the top 2 GiB with sign-extended 32-bit absolutes.
        Assert.Contains(X86RelocationType.R32S, kernel);
        Assert.Contains(X86RelocationType.R64, kernel);
        Assert.DoesNotContain(X86RelocationType.GotPcRelX, kernel);
        Assert.Contains(X86RelocationType.Plt32, pic);
        Assert.Contains(X86RelocationType.RexGotPcRelX, pic);
        Assert.Contains(X86RelocationType.TlsGd, pic);
    }

    [Fact]
    public void Symbols_carry_binding_type_visibility_and_section()
    {
        var table = ElfObject.Load(CompiledSamples.PathOf("sections")).SymbolTable!;

        var helper = table.Find("helper")!;
        Assert.Equal((ElfSymbolBinding.Local, ElfSymbolType.Function, ".text.helper"),
            (helper.Binding, helper.Type, helper.Section!.Name));
        Assert.Equal(ElfSymbolBinding.Weak, table.Find("weak_function")!.Binding);
        Assert.Equal(ElfSymbolVisibility.Hidden, table.Find("hidden_global")!.Visibility);
        Assert.Equal(ElfSymbolType.Tls, table.Find("per_thread_counter")!.Type);
        Assert.True(table.Find("external_function")!.IsUndefined);
        Assert.Equal(ElfSymbolType.File, table.Symbols[0].Type);
        Assert.True(table.Symbols[0].IsAbsolute);
        var alias = table.Find("alias_name")!;
        var target = table.Find("alias_target")!;
        Assert.Equal((target.Section, target.Value), (alias.Section, alias.Value));
        Assert.StartsWith("calls.",
            table.Symbols.Single(s => s.Name.StartsWith("calls", StringComparison.Ordinal)).Name,
            StringComparison.Ordinal);
    }

    [Fact]
    public void Tentative_definition_is_common_with_fcommon_and_bss_with_fno_common()
    {
        var common = ElfObject.Load(CompiledSamples.PathOf("O2")).SymbolTable!.Find("tentative_definition")!;
        var defined = ElfObject.Load(CompiledSamples.PathOf("kernel")).SymbolTable!.Find("tentative_definition")!;

        Assert.True(common.IsCommon);
        Assert.Equal(ElfSpecialSectionIndex.Common, common.SpecialSection);
        Assert.Equal(4ul, common.Value); // a common symbol's value is its alignment
        Assert.Equal(".bss.tentative_definition", defined.Section!.Name);
        Assert.IsType<ElfNoBitsSection>(defined.Section);
    }

    [Theory]
    [InlineData("cpp")]
    [InlineData("cpp-sections")]
    public void Comdat_groups_match_readelf(string variant)
    {
        string path = CompiledSamples.PathOf(variant);
        var expected = Readelf.Groups(path);

        var groups = ElfObject.Load(path).Sections.OfType<ElfGroupSection>()
            .Select(g => new Readelf.Group(g.Name, g.Signature!.Name, g.GroupFlags.HasFlag(ElfGroupFlags.Comdat),
                [.. g.Members.Select(m => m.Index)]))
            .ToList();

        Assert.NotEmpty(expected);
        Assert.Equal(expected.Select(g => (g.Name, g.Signature, g.IsComdat, string.Join(',', g.Members))),
            groups.Select(g => (g.Name, g.Signature, g.IsComdat, string.Join(',', g.Members))));
    }

    [Fact]
    public void Group_members_are_the_inline_function_and_its_relocations()
    {
        var elf = ElfObject.Load(CompiledSamples.PathOf("cpp"));

        var group = elf.Sections.OfType<ElfGroupSection>().Single(g => g.Signature!.Name == "_ZN3BoxIiED5Ev");

        Assert.Contains(group.Members, m => m.Name == ".text._ZN3BoxIiED0Ev");
        Assert.Contains(group.Members, m => m is ElfRelocationSection { Target.Name: ".text._ZN3BoxIiED0Ev" });
        Assert.All(group.Members, m => Assert.True(m.Flags.HasFlag(ElfSectionFlags.Group)));
        Assert.Same(group, elf.GetGroup(group.Members[0]));
    }

    [Fact]
    public void Notes_are_parsed_with_4_and_8_byte_padding()
    {
        var elf = ElfObject.Load(CompiledSamples.PathOf("cet"));

        var custom = Assert.Single(((ElfNoteSection)elf.FindSection(".note.kintsugi")!).Notes);
        var property = Assert.Single(((ElfNoteSection)elf.FindSection(".note.gnu.property")!).Notes);

        Assert.Equal(("Kintsug", 0x4b4e5453u, "0100000002000000"),
            (custom.Name, custom.Type, Convert.ToHexString(custom.Descriptor.Span)));
        Assert.Equal(("GNU", 5u, 16),
            (property.Name, property.Type, property.Descriptor.Length)); // NT_GNU_PROPERTY_TYPE_0
        Assert.Equal(8ul, elf.FindSection(".note.gnu.property")!.Alignment);
    }

    [Fact]
    public void Header_describes_an_x86_64_relocatable_object()
    {
        var elf = ElfObject.Load(CompiledSamples.PathOf("O2"));

        Assert.Equal((ElfFileType.Relocatable, ElfMachine.X86_64, 1u),
            (elf.Header.Type, elf.Header.Machine, elf.Header.Version));
        Assert.Equal(".shstrtab", elf.SectionNameTable!.Name);
        Assert.Equal(".strtab", elf.SymbolTable!.StringTable!.Name);
    }

    private static HashSet<X86RelocationType> RelocationTypes(string variant)
        =>
            [.. ElfObject.Load(CompiledSamples.PathOf(variant)).Sections.OfType<ElfRelocationSection>()
            .SelectMany(s => s.Relocations).Select(r => r.Type)];

    private static string TypeName(ElfSymbolType type) => type switch
    {
        ElfSymbolType.NoType => "NOTYPE",
        ElfSymbolType.Function => "FUNC",
        ElfSymbolType.GnuIndirectFunction => "IFUNC",
        _ => type.ToString().ToUpperInvariant(),
    };

    private static string BindingName(ElfSymbolBinding binding) =>
        binding == ElfSymbolBinding.GnuUnique ? "UNIQUE" : binding.ToString().ToUpperInvariant();

    private static string SectionIndexName(ElfSymbol symbol) => symbol.Section is { } section
        ? section.Index.ToString(CultureInfo.InvariantCulture)
        : symbol.SpecialSection switch
        {
            ElfSpecialSectionIndex.Undefined => "UND",
            ElfSpecialSectionIndex.Absolute => "ABS",
            ElfSpecialSectionIndex.Common => "COM",
            var other => ((ushort)other).ToString(CultureInfo.InvariantCulture),
        };
}
