using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>
/// Static branch and static call sites of included module code whose keys the livepatch cannot bind in time.
/// </summary>
public class InertSiteSpecification
{
    [Fact]
    public void A_tracepoint_of_a_module_is_kept_disabled_its_entries_dropped_and_named()
    {
        var d = DiffPairs.Diff("module-tracepoint", module: "pairs_mod");

        Expect.ChangedAndIncluded(d, "send_frame");
        Assert.Empty(d.Result.Refusals);
        Assert.Empty(d.OutputSections("__jump_table"));
        Assert.Empty(d.OutputSections(".static_call_sites"));
        Assert.Equal(
            [("send_frame", "__SCK__tp_func_pkt_sent", KeyUse.StaticCall),
                ("send_frame", "__tracepoint_pkt_sent", KeyUse.StaticBranch)],
            d.Result.InertSites.Select(s => (s.Function, s.Key, s.Use)));
    }

    [Fact]
    public void The_sites_of_an_inert_tracepoint_are_no_ops_even_when_objtool_has_not_made_the_branch_one()
    {
        var d = DiffPairs.Diff("module-tracepoint", module: "pairs_mod");
        var before = FunctionBytes(d.After, "send_frame");
        Assert.Equal(0xeb, before[9]);

        var symbol = d.Defined[DiffPairs.Tag + "send_frame"];
        var code = ((ElfDataSection)symbol.Section!).Data.AsSpan((int)symbol.Value, (int)symbol.Size);
        Assert.Equal(new byte[] { 0x66, 0x90 }, code.Slice(9, 2).ToArray());
        // The tracepoint's static call, behind the branch, is a no-op too; everything else is as compiled.
        Assert.Equal(0xe8, before[0x20]);
        Assert.Equal(new byte[] { 0x0f, 0x1f, 0x44, 0x00, 0x00 }, code.Slice(0x20, 5).ToArray());
        Assert.Equal(before[11..0x20], code[11..0x20].ToArray());
        Assert.Equal(before[0x25..], code[0x25..].ToArray());
    }

    [Fact]
    public void In_vmlinux_a_tracepoint_keeps_its_entries()
    {
        var d = DiffPairs.Diff("module-tracepoint");

        Assert.Empty(d.Result.InertSites);
        Assert.Equal(16UL, Assert.Single(d.OutputSections("__jump_table")).Size);
        Assert.Contains("__SCK__tp_func_pkt_sent", d.RelocationTargets(".static_call_sites"));
    }

    [Fact]
    public void A_dynamic_debug_key_of_module_code_is_the_livepatch_s_own_copy_and_its_entry_is_kept()
    {
        var d = DiffPairs.Diff("dynamic-debug-key", module: "pairs_mod");

        Expect.ChangedAndIncluded(d, "queue_frame");
        Assert.Empty(d.Result.Refusals);
        Assert.Empty(d.Result.InertSites);
        var targets = d.RelocationTargets("__jump_table");
        Assert.Equal(3, targets.Count);
        Assert.StartsWith("__UNIQUE_ID_ddebug", targets[2], StringComparison.Ordinal);
        Assert.DoesNotContain(d.Result.References,
            r => r.TargetName.StartsWith("__UNIQUE_ID_ddebug", StringComparison.Ordinal));
    }

    [Fact]
    public void Where_objtool_runs_over_the_linked_module_it_finds_no_call_to_an_inert_tracepoint()
    {
        var d = DiffPairs.Diff("module-tracepoint", module: "pairs_mod", objtoolAtLink: true);

        var symbol = d.Defined[DiffPairs.Tag + "send_frame"];
        var code = ((ElfDataSection)symbol.Section!).Data.AsSpan((int)symbol.Value, (int)symbol.Size);
        Assert.Equal(new byte[] { 0x0f, 0x1f, 0x44, 0x00, 0x00 }, code.Slice(0x20, 5).ToArray());
        Assert.DoesNotContain("__SCT__tp_func_pkt_sent", d.Undefined);
        Assert.DoesNotContain("__SCK__tp_func_pkt_sent", d.Undefined);
        Assert.Contains(d.Result.InertSites, s => s.Key == "__SCK__tp_func_pkt_sent" && s.Function == "send_frame");
    }

    [Fact]
    public void
        Where_objtool_runs_over_the_linked_module_the_output_leaves_static_call_sites_to_it_and_names_their_keys()
    {
        var linked = DiffPairs.Diff("module-tracepoint", objtoolAtLink: true);
        var compiled = DiffPairs.Diff("module-tracepoint");

        Assert.NotEmpty(compiled.OutputSections(".static_call_sites"));
        Assert.Empty(linked.OutputSections(".static_call_sites"));
        Assert.NotEmpty(linked.OutputSections("__jump_table"));
        Assert.Contains("__SCK__tp_func_pkt_sent", linked.Undefined);
        Assert.Equal("__SCK__tp_func_pkt_sent", linked.Reference("__SCK__tp_func_pkt_sent").TargetName);
    }

    private static byte[] FunctionBytes(ElfObject elf, string name)
    {
        var symbol = elf.SymbolTable!.Symbols.Single(s => s.Name == name && s.Type == ElfSymbolType.Function);
        return ((ElfDataSection)symbol.Section!).Data.AsSpan((int)symbol.Value, (int)symbol.Size).ToArray();
    }
}
