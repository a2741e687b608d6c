using Kintsugi.Elf;
using Kintsugi.Testing;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>
/// Whatever the pair, the output object is a well-formed relocatable object with nothing unchanged in it.
/// </summary>
public class OutputSpecification
{
    // Pair names come from the fixture directory, so discovering these theories compiles nothing.
    public static TheoryData<string> Pairs => DiffPairs.All;

    [Fact]
    public void There_are_at_least_45_pairs_and_most_produce_an_output()
    {
        Assert.True(DiffPairs.Names.Count >= 45, $"{DiffPairs.Names.Count} pairs");
        var withOutput = DiffPairs.Names.Count(n => DiffPairs.Diff(n).Result.Output is not null);
        Assert.True(withOutput >= 30, $"{withOutput} pairs with an output");
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void An_output_is_absent_exactly_when_the_fix_is_refused_or_patches_nothing(string pair)
    {
        var result = DiffPairs.Diff(pair).Result;
        Assert.Equal(result.IsRefused || !result.HasChanges, result.Output is null);
        if (result.Output is null) Assert.Empty(result.References);
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void The_output_round_trips_through_the_writer_and_reader_with_the_same_symbols_and_relocations(string pair)
    {
        var d = DiffPairs.Diff(pair);
        if (d.Result.Output is null) return;
        var written = d.Output.ToArray();
        var read = ElfObject.Read(written);

        Assert.Equal(Symbols(d.Output), Symbols(read));
        Assert.Equal(Relocations(d.Output), Relocations(read));
        Assert.Equal(written, read.ToArray());
    }

    /// <summary>
    /// objtool names each function's padding <c>__pfx_NAME</c> (CALL_PADDING kernels) and runs again over the linked
    /// livepatch module, where a second definition would clash: the differ's output is final, so it never has them.
    /// </summary>
    [Fact]
    public void Padding_symbols_are_neither_compared_nor_emitted()
    {
        const string pair = "cold-part-changed";
        var (before, after) = DiffPairs.Compiled(pair);
        var original = WithPaddingSymbols(ElfObject.Read(before));
        var patched = WithPaddingSymbols(ElfObject.Read(after));

        var result = ObjectDiffer.Diff(original, patched, new DiffOptions(PatchedObjectName.Vmlinux, DiffPairs.Tag));

        Assert.Contains(patched.SymbolTable!.Symbols, s => s.Name.StartsWith("__pfx_", StringComparison.Ordinal));
        Assert.Equal(DiffPairs.Diff(pair).Result.Functions, result.Functions);
        Assert.NotNull(result.Output);
        Assert.DoesNotContain(result.Output.SymbolTable!.Symbols, s => KernelNames.IsPadding(s.Name));
    }

    /// <summary>
    /// Adds what objtool's --prefix adds: a local function symbol <c>__pfx_NAME</c> at each function.
    /// </summary>
    private static ElfObject WithPaddingSymbols(ElfObject elf)
    {
        var table = elf.SymbolTable!;
        foreach (var function in table.Symbols.Where(s => s.Type == ElfSymbolType.Function && s.Section is not null)
            .ToList())
            table.Symbols.Add(new ElfSymbol("__pfx_" + function.Name)
            {
                Type = ElfSymbolType.Function,
                Binding = ElfSymbolBinding.Local,
                Section = function.Section,
                Value = function.Value,
            });
        return ElfObject.Read(elf.ToArray());
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void The_output_holds_no_unchanged_or_removed_function(string pair)
    {
        var d = DiffPairs.Diff(pair);
        if (d.Result.Output is null) return;
        var defined = d.DefinedFunctions;

        foreach (var function in d.Result.Functions.Where(f => f.Kind is FunctionChange.Unchanged
            or FunctionChange.Removed))
            Expect.Absent(d, function.Name);
        foreach (var function in d.Result.Functions.Where(f => f.Kind == FunctionChange.Changed))
            Assert.Contains(function.OutputSymbol!, defined);
        // Every function in the output is changed, new, or a cold part of one of those.
        var allowed = d.Result.Functions.Where(f => f.Kind is FunctionChange.Changed or FunctionChange.New)
            .SelectMany(f => new[] { f.OutputSymbol ?? f.Name, (f.OutputSymbol ?? f.Name) + ".cold" })
                .ToHashSet(StringComparer.Ordinal);
        Assert.All(defined, name => Assert.Contains(name, allowed));
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void Every_undefined_symbol_of_the_output_is_a_load_time_reference_with_its_sites(string pair)
    {
        var d = DiffPairs.Diff(pair);
        if (d.Result.Output is null) return;
        Assert.Equal(d.Undefined, d.Result.References.Select(r => r.OutputName).Order(StringComparer.Ordinal));
        foreach (var reference in d.Result.References)
        {
            var sites = d.Output.Sections.OfType<ElfRelocationSection>()
                .SelectMany(r => r.Relocations.Where(x => x.Symbol?.Name == reference.OutputName)
                    .Select(x => (r.Target!.Name, x.Offset)));
            Assert.Equal(sites.Order(), reference.Sites.Select(s => (s.Section, s.Offset)).Order());
        }
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void The_linker_accepts_the_output(string pair)
    {
        var d = DiffPairs.Diff(pair);
        if (d.Result.Output is null) return;
        using var directory = new TemporaryDirectory();
        var input = directory.File(pair + ".o");
        d.Output.Save(input);
        var result = ExternalCommand.Run("ld", "-r", "-o", directory.File("linked.o"), input);
        Assert.True(result.Succeeded, result.StandardError);
        Assert.Equal("", result.StandardError);
    }

    private static List<string> Symbols(ElfObject elf) =>
        [.. elf.SymbolTable!.Symbols.Select(s
            => $"{s.Name}|{s.Type}|{s.Binding}|{s.Section?.Name}|{s.Value}|{s.Size}")];

    private static List<string> Relocations(ElfObject elf) =>
        [.. elf.Sections.OfType<ElfRelocationSection>()
            .SelectMany(r => r.Relocations.Select(x => $"{r.Target!.Name}|{x}"))];
}
