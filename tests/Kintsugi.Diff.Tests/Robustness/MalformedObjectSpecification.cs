using System.Diagnostics;
using Kintsugi.Elf;
using Xunit.Abstractions;

namespace Kintsugi.Diff.Tests.Robustness;

/// <summary>
/// Malformed objects, derived by seed from real gcc-12 kernel-style objects, fed to the whole engine (read, diff,
/// write the output, read it back) as the original and as the patched side beside a valid other side. Every one
/// ends in a result, in an <see cref="Kintsugi.Elf.ElfFormatException"/> from the reader or in a
/// <see cref="DiffException"/> from the differ (neither wrapping an unexpected exception), within
/// <see cref="Engine.TimeLimit"/> and <see cref="Engine.AllocationLimit"/>. A failure names the family, the seed
/// and the mutation; <see cref="Case"/> rebuilds it from those.
/// </summary>
public class MalformedObjectSpecification(ITestOutputHelper output)
{
    /// <summary>Mutated objects per family: fourteen families make 24,500 a run, each diffed twice.</summary>
    private const int CasesPerFamily = 1750;

    [Fact]
    public void Truncated_objects_are_rejected_or_diffed() =>
        Check(nameof(Mutations.Truncated), Mutations.Truncated, reachesDiffer: false);

    [Fact]
    public void Bad_section_offsets_sizes_and_overlaps_are_rejected_or_diffed() =>
        Check(nameof(Mutations.SectionOffsetOrSize), Mutations.SectionOffsetOrSize, reachesDiffer: true);

    [Fact]
    public void Bad_sh_link_and_sh_info_are_rejected_or_diffed() =>
        Check(nameof(Mutations.LinkOrInfo), Mutations.LinkOrInfo, reachesDiffer: true);

    [Fact]
    public void Bad_symbol_section_indexes_and_name_offsets_are_rejected_or_diffed() =>
        Check(nameof(Mutations.SymbolSectionIndexOrName), Mutations.SymbolSectionIndexOrName, reachesDiffer: true);

    [Fact]
    public void Absurd_symbol_values_sizes_and_kinds_are_rejected_or_diffed() =>
        Check(nameof(Mutations.SymbolValueOrSize), Mutations.SymbolValueOrSize, reachesDiffer: true);

    [Fact]
    public void Relocation_symbol_indexes_out_of_range_are_rejected_or_diffed() =>
        Check(nameof(Mutations.RelocationSymbol), Mutations.RelocationSymbol, reachesDiffer: true);

    [Fact]
    public void Mutated_relocation_types_are_rejected_or_diffed() =>
        Check(nameof(Mutations.RelocationType), Mutations.RelocationType, reachesDiffer: true);

    [Fact]
    public void Relocation_offsets_and_addends_outside_their_section_are_rejected_or_diffed() =>
        Check(nameof(Mutations.RelocationOffsetOrAddend), Mutations.RelocationOffsetOrAddend, reachesDiffer: true);

    [Fact]
    public void Absurd_counts_table_sizes_and_alignments_are_rejected_or_diffed() =>
        Check(nameof(Mutations.AbsurdCountOrSize), Mutations.AbsurdCountOrSize, reachesDiffer: true);

    [Fact]
    public void Missing_duplicated_and_retyped_symbol_tables_are_rejected_or_diffed() =>
        Check(nameof(Mutations.SymbolTables), Mutations.SymbolTables, reachesDiffer: true);

    [Fact]
    public void Byte_flips_in_the_headers_are_rejected_or_diffed() =>
        Check(nameof(Mutations.HeaderBytes), Mutations.HeaderBytes, reachesDiffer: true);

    [Fact]
    public void Renamed_and_reflagged_sections_are_rejected_or_diffed() =>
        Check(nameof(Mutations.SectionNameOrFlags), Mutations.SectionNameOrFlags, reachesDiffer: true);

    [Fact]
    public void Random_code_data_and_table_contents_are_diffed() =>
        Check(nameof(Mutations.ContentBytes), Mutations.ContentBytes, reachesDiffer: true);

    [Fact]
    public void Several_inconsistencies_in_one_object_are_rejected_or_diffed() =>
        Check(nameof(Mutations.Combined), Mutations.Combined, reachesDiffer: true);

    [Fact]
    public void The_unmutated_pairs_diff_to_one_changed_function_each()
    {
        foreach (var unit in KernelStyleUnits.All)
        {
            Assert.Equal(new Engine.Outcome(Engine.Ending.Result, null), Engine.Run(unit.Original, unit.Patched));
            var result = ObjectDiffer.Diff(ElfObject.Read(unit.Original), ElfObject.Read(unit.Patched),
                new DiffOptions(PatchedObjectName.Vmlinux, "t_"));
            Assert.Single(result.Functions, f => f.Kind == FunctionChange.Changed);
            Assert.NotNull(result.Output);
        }
    }

    [Fact]
    public void Data_whose_claimed_extent_wraps_past_the_end_of_the_address_space_is_a_changed_value_not_a_crash()
    {
        var unit = KernelStyleUnits.All.Single(u => u.Name == "items");
        var patched = ElfObject.Read(unit.Patched);
        patched.SymbolTable!.Find("global_limit")!.Value = ulong.MaxValue;

        var result = ObjectDiffer.Diff(ElfObject.Read(unit.Original), patched,
            new DiffOptions(PatchedObjectName.Vmlinux, "t_"));

        Assert.Equal([new DataDiff("global_limit", DataChange.Changed, IsLocal: false)], result.Data);
        Assert.Equal(RefusalRule.DataChanged, Assert.Single(result.Refusals).Rule);
    }

    [Fact]
    public void New_code_asking_for_more_than_page_alignment_is_a_DiffException_naming_its_section()
    {
        var unit = KernelStyleUnits.All.Single(u => u.Name == "items");
        var patched = ElfObject.Read(unit.Patched);
        patched.FindSection(".text.remove_item")!.Alignment = 1UL << 29;

        var error =
            Assert.Throws<DiffException>(() => ObjectDiffer.Diff(ElfObject.Read(unit.Original), patched,
            new DiffOptions(PatchedObjectName.Vmlinux, "t_")));

        Assert.Contains(".text.remove_item in the patched object asks for 536870912-byte alignment", error.Message,
            StringComparison.Ordinal);
        Assert.Null(error.InnerException);
    }

    /// <summary>
    /// The mutated object of one case: the family's seeds are <c>familyBase + i</c>, units and sides in turn.
    /// </summary>
    internal static (KernelStyleUnits.Unit Unit, string Side, Mutation Mutation) Case(Mutations.Family family, int seed)
    {
        var units = KernelStyleUnits.All;
        var unit = units[seed % units.Count];
        var patchedSide = seed / units.Count % 2 == 1;
        var layout = new ObjectLayout(patchedSide ? unit.Patched : unit.Original);
        return (unit, patchedSide ? "patched" : "original", family(layout, new Random(seed)));
    }

    private void Check(string name, Mutations.Family family, bool reachesDiffer)
    {
        // Each family its own seed range, so that a seed names one case in the whole suite.
        int familyBase = (Math.Abs(StableHash(name)) % 1000) * 1_000_000;
        var failures = new List<string>();
        var endings = new Dictionary<Engine.Ending, int>();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < CasesPerFamily; i++)
        {
            int seed = familyBase + i;
            var (unit, side, mutation) = Case(family, seed);
            foreach (var (role, outcome) in new[]
            {
                ("as the original", Engine.Run(mutation.Bytes, unit.Patched)),
                ("as the patched", Engine.Run(unit.Original, mutation.Bytes)),
            })
            {
                endings[outcome.Ending] = endings.GetValueOrDefault(outcome.Ending) + 1;
                if (outcome.Failure is not null)
                    failures.Add($"{name} seed {seed} ({unit.Name} {side}: {mutation.Description}) {role}: " +
                        $"{outcome.Failure}");
            }
        }

        output.WriteLine($"{name}: {CasesPerFamily} mutated objects in {clock.ElapsedMilliseconds} ms; " +
            string.Join(", ", endings.OrderBy(e => e.Key).Select(e => $"{e.Value} {e.Key}"))
                + $"; {failures.Count} failures");
        foreach (var failure in failures.Take(20)) output.WriteLine(failure);
        Assert.True(failures.Count == 0,
            $"{failures.Count} cases broke the contract, first: {failures.FirstOrDefault()}");
        // A family meant to get past the reader must do so, or it tests the reader again and not the engine.
        if (reachesDiffer)
            Assert.True(endings.GetValueOrDefault(Engine.Ending.Refused)
                + endings.GetValueOrDefault(Engine.Ending.Result) > CasesPerFamily / 10,
                $"{name}: too few mutated objects reached the differ");
    }

    private static int StableHash(string text)
    {
        unchecked
        {
            int hash = 17;
            foreach (var c in text) hash = hash * 31 + c;
            return hash;
        }
    }
}
