using Kintsugi.Elf.Tests.Support;
using Kintsugi.Testing;

namespace Kintsugi.Elf.Tests;

/// <summary>
/// Edited objects must still be what readelf, objdump, ld and gcc accept, and must mean what the edit said.
/// </summary>
public sealed class EditSpecification : IDisposable
{
    private const string Library = """
        __attribute__((noinline)) int forty_two(void) { return 42; }
        __attribute__((noinline)) int seven(void) { return 7; }
        __attribute__((noinline)) int pick(void) { return forty_two(); }
        int answer(void) { return pick(); }
        """;

    // Without .eh_frame, whose relocations against removed sections' symbols would need editing too.
    private static readonly string[] Flags = ["-O2", "-fno-asynchronous-unwind-tables"];
    private static readonly string[] SectionFlags = [.. Flags, "-ffunction-sections"];

    private readonly TemporaryDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Renamed_symbol_links_under_its_new_name()
    {
        var elf = ElfObject.Load(_temp.Compile("lib.c", Library, Flags));
        elf.SymbolTable!.Find("answer")!.Name = "kintsugi_answer";

        int exitCode = LinkAndRun(elf, "int kintsugi_answer(void); int main(void) { return kintsugi_answer(); }");

        Assert.Equal(42, exitCode);
        Assert.Contains("kintsugi_answer", Tool.Run("readelf", "-sW", _temp.File("edited.o")),
            StringComparison.Ordinal);
    }

    [Fact]
    public void Redirected_call_relocation_shows_in_objdump_and_runs()
    {
        var elf = ElfObject.Load(_temp.Compile("lib.c", Library, SectionFlags));
        var seven = elf.SymbolTable!.Find("seven")!;
        var call = elf.GetRelocationSections(elf.FindSection(".text.pick")!).Single().Relocations
            .Single(r => r.Symbol?.Name == "forty_two");
        call.Symbol = seven;

        int exitCode = LinkAndRun(elf, "int answer(void); int main(void) { return answer(); }");

        Assert.Equal(7, exitCode);
        Assert.Matches(@"R_X86_64_PLT32\s+seven-0x4",
            Tool.Run("objdump", "-dr", "--section=.text.pick", _temp.File("edited.o")));
    }

    [Fact]
    public void Added_data_section_with_relocation_links_and_runs()
    {
        var elf = ElfObject.Load(_temp.Compile("lib.c", Library, Flags));
        var table = elf.SymbolTable!;
        var pointerSection = new ElfDataSection(".data.rel.kintsugi", ElfSectionType.ProgBits, new byte[8])
        {
            Flags = ElfSectionFlags.Write | ElfSectionFlags.Alloc,
            Alignment = 8,
        };
        elf.Sections.Insert(elf.FindSection(".data")!.Index, pointerSection);
        var relocations = new ElfRelocationSection(pointerSection, table);
        relocations.Relocations.Add(new ElfRelocation(0, X86RelocationType.R64, table.Find("answer"), 0));
        elf.Sections.Insert(pointerSection.Index, relocations);
        table.Symbols.Add(new ElfSymbol("answer_pointer")
        {
            Binding = ElfSymbolBinding.Global,
            Type = ElfSymbolType.Object,
            Section = pointerSection,
            Size = 8,
        });

        int exitCode = LinkAndRun(elf,
            "extern int (*answer_pointer)(void); int main(void) { return answer_pointer(); }");

        Assert.Equal(42, exitCode);
        Assert.Matches(@"0+\s+R_X86_64_64\s+answer",
            Tool.Run("objdump", "-r", "--section=.data.rel.kintsugi", _temp.File("edited.o")));
    }

    [Fact]
    public void Removed_function_section_leaves_an_undefined_symbol_that_another_object_provides()
    {
        var elf = ElfObject.Load(_temp.Compile("lib.c", Library, SectionFlags));
        var fortyTwo = elf.SymbolTable!.Find("forty_two")!;
        elf.RemoveSection(fortyTwo.Section!);
        fortyTwo.SpecialSection = ElfSpecialSectionIndex.Undefined;
        (fortyTwo.Type, fortyTwo.Value, fortyTwo.Size) = (ElfSymbolType.NoType, 0, 0);

        int exitCode = LinkAndRun(elf,
            "int answer(void); int forty_two(void) { return 43; } int main(void) { return answer(); }");

        Assert.Equal(43, exitCode);
        Assert.Null(elf.FindSection(".text.forty_two"));
        Assert.Null(elf.FindSection(".rela.text.forty_two"));
        Assert.Matches(@"R_X86_64_PLT32\s+forty_two-0x4",
            Tool.Run("objdump", "-dr", "--section=.text.pick", _temp.File("edited.o")));
    }

    [Fact]
    public void Inserting_and_removing_sections_renumbers_group_members_and_relocation_targets()
    {
        var elf = ElfObject.Load(CompiledSamples.PathOf("cpp"));
        elf.Sections.Insert(0, new ElfDataSection(".kintsugi.first", ElfSectionType.ProgBits, [1]));
        elf.Sections.Insert(8, new ElfDataSection(".kintsugi.eighth", ElfSectionType.ProgBits, [8]));
        elf.RemoveSection(elf.FindSection(".comment")!);
        string path = _temp.File("edited.o");
        elf.Save(path);

        var groups = Readelf.Groups(path);
        Tool.Run("ld", "-r", path, "-o", _temp.File("linked.o"));

        Assert.Equal(
            elf.Sections.OfType<ElfGroupSection>()
                .Select(g => (g.Signature!.Name, string.Join(',', g.Members.Select(m => m.Index)))),
            groups.Select(g => (g.Signature, string.Join(',', g.Members))));
        Assert.Equal(RoundTripSpecification.Describe(elf), RoundTripSpecification.Describe(ElfObject.Load(path)));
    }

    [Fact]
    public void Local_symbol_added_after_globals_is_written_before_them()
    {
        var elf = ElfObject.Load(_temp.Compile("lib.c", Library, Flags));
        var text = elf.FindSection(".text")!;
        var local = new ElfSymbol("kintsugi_local")
        { Binding = ElfSymbolBinding.Local, Type = ElfSymbolType.Function, Section = text };
        elf.SymbolTable!.Symbols.Add(local);
        string path = _temp.File("edited.o");
        elf.Save(path);

        var symbols = Readelf.Symbols(path);
        int firstGlobal = symbols.FindIndex(s => s.Binding != "LOCAL");
        Tool.Run("ld", "-r", path, "-o", _temp.File("linked.o"));

        Assert.Equal("kintsugi_local", symbols[firstGlobal - 1].Name);
        Assert.Equal(firstGlobal, local.Index + 1);
        Assert.Matches($@"\.symtab\s+SYMTAB\s+\S+\s+\S+\s+\S+\s+18\s+\d+\s+{firstGlobal}\s+8",
            Tool.Run("readelf", "-SW", path));
    }

    [Fact]
    public void Object_built_from_scratch_links_and_runs()
    {
        var elf = ElfObject.CreateRelocatable();
        var table = elf.SymbolTable!;
        // call external_seven; add eax, 35; ret
        var text = new ElfDataSection(".text", ElfSectionType.ProgBits, [0xe8, 0, 0, 0, 0, 0x83, 0xc0, 35, 0xc3])
        {
            Flags = ElfSectionFlags.Alloc | ElfSectionFlags.ExecInstr,
            Alignment = 16,
        };
        elf.Sections.Insert(0, text);
        var external = new ElfSymbol("external_seven") { Binding = ElfSymbolBinding.Global };
        table.Symbols.Add(new ElfSymbol("scratch.s")
        {
            Type = ElfSymbolType.File,
            SpecialSection = ElfSpecialSectionIndex.Absolute
        });
        table.Symbols.Add(new ElfSymbol("kintsugi_scratch")
        {
            Binding = ElfSymbolBinding.Global,
            Type = ElfSymbolType.Function,
            Section = text,
            Size = 9
        });
        table.Symbols.Add(external);
        var relocations = new ElfRelocationSection(text, table);
        relocations.Relocations.Add(new ElfRelocation(1, X86RelocationType.Plt32, external, -4));
        elf.Sections.Insert(1, relocations);

        int exitCode = LinkAndRun(elf,
            "int kintsugi_scratch(void); int external_seven(void) { return 7; } int main(void) { return " +
            "kintsugi_scratch(); }");

        Assert.Equal(42, exitCode);
        Assert.Matches(@"R_X86_64_PLT32\s+external_seven-0x4", Tool.Run("objdump", "-dr", _temp.File("edited.o")));
    }

    [Fact]
    public void Added_note_shows_in_readelf()
    {
        var elf = ElfObject.Load(CompiledSamples.PathOf("cet"));
        var notes = (ElfNoteSection)elf.FindSection(".note.kintsugi")!;
        notes.Notes.Add(new ElfNote("Kintsugi", 0x1234, new byte[] { 0xde, 0xad, 0xbe, 0xef, 0x01 }));
        string path = _temp.File("edited.o");
        elf.Save(path);

        string readelf = Tool.Run("readelf", "-nW", path);

        Assert.Matches(@"Kintsugi\s+0x00000005\s+Unknown note type: \(0x00001234\)\s+description data: de ad be ef 01",
            readelf);
        Assert.Contains("x86 feature: IBT, SHSTK", readelf, StringComparison.Ordinal);
        Assert.Equal(2, ((ElfNoteSection)ElfObject.Load(path).FindSection(".note.kintsugi")!).Notes.Count);
    }

    [Fact]
    public void Writing_fails_while_a_relocation_refers_to_a_removed_symbol()
    {
        var elf = ElfObject.Load(_temp.Compile("lib.c", Library, SectionFlags));
        var fortyTwo = elf.SymbolTable!.Find("forty_two")!;
        elf.SymbolTable.Symbols.Remove(fortyTwo);

        var error = Assert.Throws<InvalidOperationException>(elf.ToArray);

        Assert.Contains("'forty_two'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Writing_fails_while_a_symbol_is_defined_in_a_removed_section()
    {
        var elf = ElfObject.Load(_temp.Compile("lib.c", Library, SectionFlags));
        elf.RemoveSection(elf.FindSection(".text.seven")!);

        var error = Assert.Throws<InvalidOperationException>(elf.ToArray);

        Assert.Contains("'seven'", error.Message, StringComparison.Ordinal);
        Assert.Contains("'.text.seven'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Section_cannot_belong_to_two_objects()
    {
        var first = ElfObject.CreateRelocatable();
        var second = ElfObject.CreateRelocatable();

        Assert.Throws<InvalidOperationException>(() => second.Sections.Add(first.Sections[0]));
    }

    [Fact]
    public void Indexes_follow_insertions_and_removals()
    {
        var elf = ElfObject.Load(CompiledSamples.PathOf("O2"));
        var symtab = elf.SymbolTable!;
        int before = symtab.Index;

        elf.Sections.Insert(0, new ElfDataSection(".first"));
        Assert.Equal(before + 1, symtab.Index);
        elf.Sections.RemoveAt(0);
        Assert.Equal(before, symtab.Index);
        Assert.Same(symtab, elf.GetSection(before));
    }

    /// <summary>Saves the edited object, links it with a main program and returns the program's exit code.</summary>
    private int LinkAndRun(ElfObject elf, string mainSource)
    {
        string edited = _temp.File("edited.o");
        elf.Save(edited);
        Tool.Run("ld", "-r", edited, "-o", _temp.File("relinked.o"));
        string main = _temp.Compile("main.c", mainSource, "-O0");
        string program = _temp.File("program");
        Tool.Run("gcc-12", main, edited, "-o", program);
        return Tool.TryRunIn(_temp.Path, program).ExitCode;
    }
}
