using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>
/// Functions are compared instruction by instruction, with relocation targets compared by what they name.
/// </summary>
public class ComparisonSpecification
{
    [Fact]
    public void A_function_whose_only_change_is_which_symbol_it_calls_is_changed()
    {
        var d = DiffPairs.Diff("call-target-changed");
        Assert.Equal(Bytes(d.Before, "flush"), Bytes(d.After, "flush"));

        Expect.ChangedAndIncluded(d, "flush");
        Expect.ExternalReference(d, "flush_slow");
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == "flush_fast");
    }

    [Fact]
    public void The_same_code_calling_a_static_that_moved_to_another_symbol_index_is_unchanged()
    {
        var d = DiffPairs.Diff("static-callee-moved");
        Assert.NotEqual(CallSymbolIndex(d.Before, "lookup_key"), CallSymbolIndex(d.After, "lookup_key"));

        Expect.Unchanged(d, "lookup_key", "slot_of");
        Expect.Absent(d, "lookup_key");
        Expect.ChangedAndIncluded(d, "store_key");
        Assert.Equal(FunctionChange.New, d.Kind("clamp_key"));
        Expect.ReferenceToUnit(d, "slot_of", isLocal: true, ReferenceTargetKind.Function);
    }

    [Fact]
    public void A_changed_function_calls_the_new_version_of_another_changed_function_directly()
    {
        var d = DiffPairs.Diff("changed-calls-changed");

        Expect.ChangedAndIncluded(d, "inner_limit");
        Expect.ChangedAndIncluded(d, "outer_limit");
        Assert.Contains(DiffPairs.Tag + "inner_limit", d.RelocationTargets(".text.outer_limit"));
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == "inner_limit");
    }

    [Fact]
    public void The_same_instructions_testing_another_static_key_are_a_change()
    {
        var d = DiffPairs.Diff("static-key-swapped");
        Assert.Equal(Bytes(d.Before, "transmit"), Bytes(d.After, "transmit"));

        Expect.ChangedAndIncluded(d, "transmit");
        Expect.Unchanged(d, "receive");
        Assert.Equal([DiffPairs.Tag + "transmit", DiffPairs.Tag + "transmit", "tx_tracing"],
            d.RelocationTargets("__jump_table"));
        Expect.ReferenceToUnit(d, "tx_tracing", isLocal: false, ReferenceTargetKind.Object);
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == "rx_tracing");
    }

    [Fact]
    public void A_WARN_ON_that_became_WARN_ON_ONCE_is_a_change_though_only_its_bug_entry_differs()
    {
        var d = DiffPairs.Diff("warn-on-becomes-warn-on-once");
        Assert.Equal(Bytes(d.Before, "queue_push"), Bytes(d.After, "queue_push"));

        Expect.ChangedAndIncluded(d, "queue_push");
        Expect.Unchanged(d, "queue_pop");
        var table = Assert.IsType<ElfDataSection>(Assert.Single(d.OutputSections("__bug_table")));
        Assert.Equal(12, table.Data.Length);
        const ushort warningOnceTaint9 = 1 | 2 | 9 << 8;
        Assert.Equal(warningOnceTaint9, BitConverter.ToUInt16(table.Data, 10));
    }

    [Fact]
    public void A_changed_immediate_changes_only_its_function()
    {
        var d = DiffPairs.Diff("immediate-changed");

        Expect.ChangedAndIncluded(d, "max_segments");
        Expect.Unchanged(d, "min_segments");
        Assert.Equal([DiffPairs.Tag + "max_segments"], d.DefinedFunctions);
    }

    [Fact]
    public void Reading_another_field_of_the_same_variable_is_a_change()
    {
        var d = DiffPairs.Diff("data-field-reference-changed");

        Expect.ChangedAndIncluded(d, "count_rx");
        Expect.Unchanged(d, "count_tx");
        var reference = Expect.ReferenceToUnit(d, "global_stats", isLocal: false, ReferenceTargetKind.Object);
        Assert.Single(reference.Sites);
        Assert.Empty(d.Result.Data);
    }

    [Fact]
    public void A_fix_that_changes_no_code_has_no_changes_and_no_output()
    {
        var d = DiffPairs.Diff("comment-only-change");

        Expect.Unchanged(d, "add_one");
        Assert.False(d.Result.HasChanges);
        Assert.Null(d.Result.Output);
        Assert.Empty(d.Result.Refusals);
        Assert.Empty(d.Result.References);
    }

    [Fact]
    public void A_change_of_an_inline_helper_in_a_header_changes_every_caller_it_was_inlined_into()
    {
        var d = DiffPairs.Diff("inline-header-helper-changed");

        Assert.DoesNotContain(d.Result.Functions, f => f.Name == "mtu_clamp");
        Expect.ChangedAndIncluded(d, "set_mtu");
        Expect.ChangedAndIncluded(d, "probe_mtu");
        Expect.Unchanged(d, "default_mtu");
        Assert.Equal([DiffPairs.Tag + "probe_mtu", DiffPairs.Tag + "set_mtu"], d.DefinedFunctions);
    }

    private static byte[] Bytes(ElfObject elf, string function)
    {
        var symbol = elf.SymbolTable!.Symbols.Single(s => s.Name == function);
        return ((ElfDataSection)symbol.Section!).Data.AsSpan((int)symbol.Value, (int)symbol.Size).ToArray();
    }

    /// <summary>The symbol table index the function's call to its static helper goes through.</summary>
    private static int CallSymbolIndex(ElfObject elf, string function)
    {
        var symbol = elf.SymbolTable!.Symbols.Single(s => s.Name == function);
        return elf.GetRelocationSections(symbol.Section!).SelectMany(r => r.Relocations)
            .Single(r => r.Symbol!.Name is not ("__fentry__" or "__x86_return_thunk")).Symbol!.Index;
    }
}

/// <summary>Every function of either object is classified; new functions and data are allowed and included.</summary>
public class ClassificationSpecification
{
    [Fact]
    public void A_new_global_function_is_new_and_defined_in_the_output_under_its_own_name()
    {
        var d = DiffPairs.Diff("new-global-function");

        Assert.Equal(FunctionChange.New, d.Kind("perimeter"));
        Expect.Unchanged(d, "area");
        Assert.True(d.Result.HasChanges);
        var symbol = Assert.Contains("perimeter", d.Defined);
        Assert.Equal(ElfSymbolBinding.Global, symbol.Binding);
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == "perimeter");
        Assert.Equal(["perimeter"], d.DefinedFunctions);
    }

    [Fact]
    public void A_new_static_function_called_by_a_changed_one_is_defined_in_the_output_not_referenced()
    {
        var d = DiffPairs.Diff("new-static-function-called");

        Assert.Equal(FunctionChange.New, d.Kind("len_ok"));
        Assert.True(d.Function("len_ok").IsLocal);
        Expect.ChangedAndIncluded(d, "validate");
        var helper = Assert.Contains("len_ok", d.Defined);
        Assert.Equal(ElfSymbolBinding.Local, helper.Binding);
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == "len_ok");
        Assert.Contains("len_ok", d.RelocationTargets(".text.validate"));
        Expect.ExternalReference(d, "capable");
    }

    [Fact]
    public void A_removed_function_is_reported_removed_and_nothing_is_patched()
    {
        var d = DiffPairs.Diff("removed-function");

        Assert.Equal(FunctionChange.Removed, d.Kind("legacy_path"));
        Expect.Unchanged(d, "modern_path");
        Assert.False(d.Result.HasChanges);
        Assert.Null(d.Result.Output);
        Assert.Empty(d.Result.Refusals);
    }

    [Fact]
    public void A_new_global_variable_is_new_data_defined_in_the_output()
    {
        var d = DiffPairs.Diff("new-global-data");

        Assert.Equal(new DataDiff("limit_bias", DataChange.New, IsLocal: false), Assert.Single(d.Result.Data));
        Expect.ChangedAndIncluded(d, "limit_of");
        var variable = Assert.Contains("limit_bias", d.Defined);
        Assert.Equal(ElfSymbolBinding.Global, variable.Binding);
        Assert.Equal(3, BitConverter.ToInt32(((ElfDataSection)variable.Section!).Data, (int)variable.Value));
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == "limit_bias");
    }

    [Fact]
    public void New_data_pointing_at_new_functions_brings_them_into_the_output()
    {
        var d = DiffPairs.Diff("new-ops-table-with-new-function");

        Expect.ChangedAndIncluded(d, "codec_setup");
        Assert.Equal(new DataDiff("xor_ops", DataChange.New, IsLocal: true), Assert.Single(d.Result.Data));
        Assert.Equal(FunctionChange.New, d.Kind("xor_encode"));
        Assert.Equal(FunctionChange.New, d.Kind("xor_decode"));
        Assert.Equal(["xor_encode", "xor_decode"], d.RelocationTargets(".rodata.xor_ops"));
        Assert.Contains("xor_ops", d.RelocationTargets(".text.codec_setup"));
        Assert.Equal([DiffPairs.Tag + "codec_setup", "xor_decode", "xor_encode"], d.DefinedFunctions);
        Expect.ExternalReference(d, "register_codec");
    }

    [Theory]
    [InlineData("sample_count", ".data..percpu", 64UL)]
    [InlineData("sample_threshold", ".data..read_mostly", 4UL)]
    [InlineData("sample_enabled", ".data..ro_after_init", 4UL)]
    public void New_data_keeps_its_section_and_alignment_so_the_kernel_treats_it_alike(string variable, string section,
        ulong alignment)
    {
        var d = DiffPairs.Diff("new-data-keeps-its-section");

        Expect.ChangedAndIncluded(d, "sample");
        Assert.Contains(d.Result.Data, x => x.Name == variable && x.Kind == DataChange.New);
        var symbol = Assert.Contains(variable, d.Defined);
        Assert.Equal(section, symbol.Section!.Name);
        Assert.Equal(alignment, symbol.Section.Alignment);
        Assert.True(symbol.Section.Flags.HasFlag(ElfSectionFlags.Write));
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == variable);
    }

    [Fact]
    public void New_static_variables_are_new_data_defined_in_the_output()
    {
        var d = DiffPairs.Diff("new-static-data");

        Assert.Equal(["event_names", "events_seen"],
            d.Result.Data.Where(x => x.Kind == DataChange.New && x.IsLocal).Select(x => x.Name)
            .Order(StringComparer.Ordinal));
        Expect.ChangedAndIncluded(d, "record_event");
        Assert.IsType<ElfNoBitsSection>(Assert.Contains("events_seen", d.Defined).Section);
        Assert.Equal(24UL, Assert.Contains("event_names", d.Defined).Size);
        Assert.Empty(d.Result.Refusals);
    }
}
