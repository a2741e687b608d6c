using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>
/// The decision trace (<c>kintsugi kernel diff --trace</c>): every correlation, comparison, inclusion, refusal and
/// binding, each with its reason, so a patch author can learn why a function is or is not in the patch.
/// </summary>
public class TraceSpecification
{
    private static (DiffResult Result, IReadOnlyList<DiffDecision> Decisions) Traced(string pair, string? module = null)
    {
        var (before, after) = DiffPairs.Compiled(pair);
        var decisions = new List<DiffDecision>();
        var target = module is null ? PatchedObjectName.Vmlinux : PatchedObjectName.Parse(module);
        var result = ObjectDiffer.Diff(ElfObject.Read(before), ElfObject.Read(after),
            new DiffOptions(target, DiffPairs.Tag) { Trace = decisions.Add });
        return (result, decisions);
    }

    [Fact]
    public void Every_function_is_traced_with_its_verdict()
    {
        var (_, decisions) = Traced("numbered-static-renumbered");

        Assert.Contains(decisions, d => d is { Step: DiffStep.Compare, Symbol: "count_opens" }
            && d.Reason.StartsWith("changed"));
        Assert.Contains(decisions, d => d is { Step: DiffStep.Compare, Symbol: "count_closes", Reason: "unchanged" });
        Assert.Contains(decisions, d => d is { Step: DiffStep.Compare, Symbol: "count_reads" }
            && d.Reason.StartsWith("new"));
    }

    [Fact]
    public void A_line_only_change_is_traced_as_unchanged_with_the_reason()
    {
        var (_, decisions) = Traced("line-only-warn-slowpath");

        Assert.Contains(decisions, d => d.Step == DiffStep.Compare && d.Reason.StartsWith("unchanged")
            && d.Reason.Contains("__LINE__"));
    }

    [Fact]
    public void A_static_matched_through_its_users_is_traced_as_a_correlation()
    {
        var (_, decisions) = Traced("static-in-inline-helper-gains-user");

        var correlation = Assert.Single(decisions, d => d.Step == DiffStep.Correlate);
        Assert.StartsWith("id.", correlation.Symbol);
        Assert.Contains("users overlap", correlation.Reason);
    }

    [Fact]
    public void What_enters_the_patch_and_what_is_left_for_load_time_are_traced()
    {
        var (result, decisions) = Traced("numbered-static-renumbered");

        Assert.Contains(decisions, d => d is { Step: DiffStep.Include, Symbol: "count_opens" }
            && d.Reason.Contains(DiffPairs.Tag + "count_opens"));
        Assert.All(result.References,
            r => Assert.Contains(decisions, d => d.Step == DiffStep.Bind && d.Symbol == r.OutputName));
        Assert.Contains(decisions, d => d.Step == DiffStep.Bind && d.Reason.Contains("local count."));
    }

    [Fact]
    public void A_refusal_is_traced_with_its_rule()
    {
        var (_, decisions) = Traced("static-key-branch", module: "pairs_mod");

        Assert.Contains(decisions, d => d is { Step: DiffStep.Refuse, Symbol: "tracing_enabled" }
            && d.Reason.StartsWith(nameof(RefusalRule.SpecialSectionUnsupported)));
    }

    [Theory]
    [InlineData("numbered-static-renumbered")]
    [InlineData("callbacks")]
    public void Tracing_changes_nothing_in_the_output(string pair)
    {
        var (traced, _) = Traced(pair);
        var untraced = DiffPairs.Diff(pair).Result;

        Assert.Equal(untraced.Output!.ToArray(), traced.Output!.ToArray());
    }
}
