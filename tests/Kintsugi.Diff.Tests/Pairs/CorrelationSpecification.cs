using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>
/// Numbered static locals: new numbers whenever the unit changes, matched again through the functions that use them.
/// </summary>
public class NumberedStaticSpecification
{
    [Fact]
    public void A_changed_function_s_static_is_bound_to_its_original_number_after_the_unit_renumbered_it()
    {
        var d = DiffPairs.Diff("numbered-static-renumbered");
        var original = PairDiff.StaticUsedBy(d.Before, "count_opens", "count");
        var renumbered = PairDiff.StaticUsedBy(d.After, "count_opens", "count");
        Assert.NotEqual(original, renumbered);

        Expect.ChangedAndIncluded(d, "count_opens");
        Expect.Unchanged(d, "count_closes");
        Assert.Empty(d.Result.Refusals);
        Assert.DoesNotContain(d.Result.Data, x => x.Kind == DataChange.Changed);
        Expect.ReferenceToUnit(d, original, isLocal: true, ReferenceTargetKind.Object);
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == renumbered && renumbered != original);
    }

    [Fact]
    public void A_new_function_s_static_is_new_data_defined_in_the_output()
    {
        var d = DiffPairs.Diff("numbered-static-renumbered");
        var name = PairDiff.StaticUsedBy(d.After, "count_reads", "count");

        Assert.Equal(FunctionChange.New, d.Kind("count_reads"));
        Assert.Contains(d.Result.Data, x => x.Name == name && x.Kind == DataChange.New && x.IsLocal);
        var symbol = Assert.Contains(name, d.Defined);
        Assert.Equal(ElfSymbolType.Object, symbol.Type);
        Assert.Contains("count_reads", d.Defined.Keys);
    }

    [Fact]
    public void Reordering_functions_that_own_same_named_statics_changes_nothing()
    {
        var d = DiffPairs.Diff("numbered-static-functions-swapped");
        Assert.NotEqual(PairDiff.StaticUsedBy(d.Before, "hits_read", "hits"),
            PairDiff.StaticUsedBy(d.After, "hits_read", "hits"));

        Expect.Unchanged(d, "hits_read", "hits_write");
        Assert.Empty(d.Result.Data);
        Assert.Empty(d.Result.Refusals);
        Assert.False(d.Result.HasChanges);
        Assert.Null(d.Result.Output);
    }

    [Fact]
    public void A_static_of_an_inline_helper_that_gained_a_caller_is_still_the_running_one()
    {
        var d = DiffPairs.Diff("static-in-inline-helper-gains-user");

        Expect.ChangedAndIncluded(d, "alloc_b");
        Expect.Unchanged(d, "alloc_a");
        Assert.Equal(FunctionChange.New, d.Kind("alloc_c"));
        Assert.Empty(d.Result.Data);
        Assert.DoesNotContain(d.Defined.Keys, name => name.StartsWith("id.", StringComparison.Ordinal));
        var id = Expect.ReferenceToUnit(d, PairDiff.StaticUsedBy(d.Before, "alloc_b", "id"), isLocal: true,
            ReferenceTargetKind.Object);
        Assert.Equal([".text.alloc_b", ".text.alloc_c"],
            id.Sites.Select(s => s.Section).Distinct().Order(StringComparer.Ordinal));
    }

    [Fact]
    public void A_static_of_an_inline_helper_that_lost_a_caller_is_still_the_running_one()
    {
        var d = DiffPairs.Diff("static-in-inline-helper-loses-user");

        Expect.ChangedAndIncluded(d, "alloc_a");
        Expect.ChangedAndIncluded(d, "alloc_b");
        Assert.Empty(d.Result.Data);
        Assert.DoesNotContain(d.Defined.Keys, name => name.StartsWith("id.", StringComparison.Ordinal));
        var id = Expect.ReferenceToUnit(d, PairDiff.StaticUsedBy(d.Before, "alloc_a", "id"), isLocal: true,
            ReferenceTargetKind.Object);
        Assert.All(id.Sites, s => Assert.Equal(".text.alloc_a", s.Section));
    }

    [Fact]
    public void A_new_initial_value_of_a_function_s_static_is_refused_naming_the_static()
    {
        var d = DiffPairs.Diff("numbered-static-initializer-changed");
        var name = PairDiff.StaticUsedBy(d.After, "next_ticket", "ticket");

        Assert.Contains(d.Result.Data, x => x.Name == name && x.Kind == DataChange.Changed);
        Expect.Refused(d, RefusalRule.DataChanged, name, "shadow variable", "post-patch callback");
    }
}

/// <summary>
/// Compiler clones (.isra, .constprop, .part, .cold) are functions of their own, compared like any other.
/// </summary>
public class CompilerCloneSpecification
{
    [Theory]
    [InlineData("isra-clone-changed", "request_cost.isra.0", new[] { "submit", "resubmit" })]
    [InlineData("constprop-clone-changed", "scale.constprop.0", new[] { "scale_a", "scale_b" })]
    [InlineData("part-clone-changed", "lookup.part.0",
        new[] { "lookup_one", "lookup_two", "lookup_three", "lookup_four" })]
    public void A_changed_clone_is_patched_under_its_own_name_and_its_callers_stay_unchanged(string pair, string clone,
        string[] callers)
    {
        var d = DiffPairs.Diff(pair);

        Assert.True(d.Function(clone).IsLocal);
        Expect.ChangedAndIncluded(d, clone);
        Expect.Unchanged(d, callers);
        foreach (var caller in callers) Expect.Absent(d, caller);
        Assert.Equal([DiffPairs.Tag + ObjectDiffer.Sanitize(clone)], d.DefinedFunctions);
    }

    [Theory]
    [InlineData("isra-clone-unchanged", "request_cost.isra.0", "resubmit")]
    [InlineData("constprop-clone-unchanged", "scale.constprop.0", "scale_b")]
    [InlineData("part-clone-unchanged", "lookup.part.0", "lookup_one")]
    public void An_unchanged_clone_called_by_a_changed_function_is_a_local_reference_to_the_running_clone(string pair,
        string clone, string caller)
    {
        var d = DiffPairs.Diff(pair);

        Expect.Unchanged(d, clone);
        Expect.ChangedAndIncluded(d, caller);
        Expect.Absent(d, clone);
        Expect.ReferenceToUnit(d, clone, isLocal: true, ReferenceTargetKind.Function);
        Assert.Equal([DiffPairs.Tag + ObjectDiffer.Sanitize(caller)], d.DefinedFunctions);
    }

    [Fact]
    public void A_change_only_in_the_cold_part_changes_its_parent_and_the_cold_part_goes_with_it()
    {
        var d = DiffPairs.Diff("cold-part-changed");
        Assert.Contains(d.After.SymbolTable!.Symbols, s => s.Name == "dev_check.cold");

        Expect.ChangedAndIncluded(d, "dev_check");
        Expect.Unchanged(d, "dev_reset");
        Assert.DoesNotContain(d.Result.Functions, f => f.Name.Contains(".cold", StringComparison.Ordinal));
        // Named after its parent's output symbol: objtool over the linked module finds a cold part's parent by that
        // name.
        var cold = Assert.Contains(DiffPairs.Tag + "dev_check.cold", d.Defined);
        Assert.StartsWith(".text.unlikely", cold.Section!.Name, StringComparison.Ordinal);
        Assert.DoesNotContain("dev_check.cold", d.Defined.Keys);
        Expect.ExternalReference(d, "schedule");
    }

    [Fact]
    public void A_new_function_with_a_cold_part_is_included_whole()
    {
        var d = DiffPairs.Diff("new-function-with-cold-part");

        Assert.Equal(FunctionChange.New, d.Kind("check_channel"));
        Expect.ChangedAndIncluded(d, "open_channel");
        Assert.Equal(["check_channel", "check_channel.cold", DiffPairs.Tag + "open_channel"], d.DefinedFunctions);
        Assert.StartsWith(".text.unlikely", Assert.Contains("check_channel.cold", d.Defined).Section!.Name,
            StringComparison.Ordinal);
        Assert.Contains("check_channel.cold", d.RelocationTargets(".text.check_channel"));
        Assert.DoesNotContain(d.Result.References,
            r => r.TargetName.StartsWith("check_channel", StringComparison.Ordinal));
    }

    [Fact]
    public void A_function_whose_hot_and_cold_parts_are_the_same_is_unchanged_and_called_in_place()
    {
        var d = DiffPairs.Diff("cold-part-unchanged");

        Expect.Unchanged(d, "dev_check");
        Expect.ChangedAndIncluded(d, "dev_reset");
        Assert.DoesNotContain("dev_check.cold", d.Defined.Keys);
        Expect.ReferenceToUnit(d, "dev_check", isLocal: false, ReferenceTargetKind.Function);
    }
}

/// <summary>String literals are compared by their text, wherever they sit in the string sections.</summary>
public class StringLiteralSpecification
{
    [Fact]
    public void A_changed_literal_changes_its_function_and_the_output_carries_the_new_text_only()
    {
        var d = DiffPairs.Diff("string-literal-changed");

        Expect.ChangedAndIncluded(d, "report_open");
        Expect.Unchanged(d, "report_close");
        var strings = Expect.Strings(d, name => name.StartsWith(".rodata", StringComparison.Ordinal)
            && name.Contains(".str", StringComparison.Ordinal));
        Assert.Contains("\u00016opened descriptor %d\n", strings);
        Assert.DoesNotContain(strings, s => s.Contains("close fd", StringComparison.Ordinal));
    }

    [Fact]
    public void A_literal_that_moved_inside_a_shared_string_section_leaves_the_functions_using_it_unchanged()
    {
        var d = DiffPairs.Diff("string-literal-moved");
        Assert.NotEqual(LiteralOffset(d.Before, "report_all"), LiteralOffset(d.After, "report_all"));

        Expect.ChangedAndIncluded(d, "report_read");
        Expect.Unchanged(d, "report_all", "report_write");
        Expect.Absent(d, "report_all");
        Assert.Contains("\u00013neg %d\n", Expect.Strings(d, name => name == ".rodata.report_read.str1.1"));
    }

    [Fact]
    public void Literals_of_new_data_in_the_unit_s_string_section_are_copied_with_it()
    {
        var d = DiffPairs.Diff("new-static-data");

        Assert.Contains("event_names", d.Defined.Keys);
        var strings = Expect.Strings(d, name => name == ".rodata.str1.1");
        Assert.Equal(["close", "open", "read"], strings.Order(StringComparer.Ordinal));
        Assert.All(d.RelocationTargets(".rodata.event_names"), target => Assert.Equal(".rodata.str1.1", target));
    }

    /// <summary>Where report_all's first literal sits in its string section.</summary>
    private static long LiteralOffset(ElfObject elf, string function)
    {
        var symbol = elf.SymbolTable!.Symbols.Single(s => s.Name == function);
        return elf.GetRelocationSections(symbol.Section!).SelectMany(r => r.Relocations)
            .First(r => r.Symbol?.Section?.Name.Contains(".str1", StringComparison.Ordinal) == true).Addend;
    }
}

/// <summary>
/// Statics the compiler makes per use (lock class keys, once flags, __func__, switch tables, debug descriptors) are
/// never correlated: a function using them is compared by their contents, and an included function gets fresh copies.
/// </summary>
public class SpecialStaticSpecification
{
    [Fact]
    public void A_changed_function_gets_a_fresh_lock_class_key_and_renumbered_keys_leave_the_others_unchanged()
    {
        var d = DiffPairs.Diff("lock-class-key-per-use");
        Assert.NotEqual(PairDiff.StaticUsedBy(d.Before, "pool_init", "__key"),
            PairDiff.StaticUsedBy(d.After, "pool_init", "__key"));

        Expect.ChangedAndIncluded(d, "queue_init");
        Expect.Unchanged(d, "pool_init");
        Expect.Absent(d, "pool_init");
        var key = PairDiff.StaticUsedBy(d.After, "queue_init", "__key");
        var copy = Assert.Contains(key, d.Defined);
        Assert.Equal(ElfSymbolBinding.Local, copy.Binding);
        Assert.Equal(16UL, copy.Size);
        Assert.DoesNotContain(d.Result.References, r => r.TargetName.StartsWith("__key", StringComparison.Ordinal));
        Assert.DoesNotContain(d.Result.Data, x => x.Name.StartsWith("__key", StringComparison.Ordinal));
    }

    [Fact]
    public void A_changed_function_gets_its_own_warned_once_flag_in_data_once()
    {
        var d = DiffPairs.Diff("warn-once-flag");

        Expect.ChangedAndIncluded(d, "check_depth");
        Expect.Unchanged(d, "check_width");
        var flag = Assert.Single(d.Defined.Values, s => s.Name.StartsWith("__warned.", StringComparison.Ordinal));
        Assert.Equal(".data.once", flag.Section!.Name);
        Assert.Equal(ElfSymbolBinding.Local, flag.Binding);
        Assert.DoesNotContain(d.Result.References, r => r.TargetName.StartsWith("__warned", StringComparison.Ordinal));
        Assert.Empty(d.Result.Refusals);
    }

    [Fact]
    public void A_changed_function_gets_its_own_already_done_flag()
    {
        var d = DiffPairs.Diff("printk-once-flag");

        Expect.ChangedAndIncluded(d, "legacy_ioctl");
        Expect.Unchanged(d, "legacy_open");
        var flag = Assert.Single(d.Defined.Values, s => s.Name.StartsWith("__already_done.", StringComparison.Ordinal));
        Assert.Equal(".data.once", flag.Section!.Name);
        Assert.DoesNotContain(d.Result.References,
            r => r.TargetName.StartsWith("__already_done", StringComparison.Ordinal));
        Assert.DoesNotContain("legacy_open.cold", d.Defined.Keys);
    }

    [Fact]
    public void A_renumbered_func_name_leaves_its_function_unchanged_and_a_changed_function_gets_its_own_copy()
    {
        var d = DiffPairs.Diff("func-name-string");
        Assert.NotEqual(PairDiff.StaticUsedBy(d.Before, "remove_device", "__func__"),
            PairDiff.StaticUsedBy(d.After, "remove_device", "__func__"));

        Expect.ChangedAndIncluded(d, "probe_device");
        Expect.Unchanged(d, "remove_device");
        Expect.Absent(d, "remove_device");
        var name = PairDiff.StaticUsedBy(d.After, "probe_device", "__func__");
        Assert.Contains(name, d.Defined.Keys);
        Assert.Contains("probe_device", Expect.Strings(d, section => section == ".rodata." + name));
        Assert.DoesNotContain(d.Result.References, r => r.TargetName.StartsWith("__func__", StringComparison.Ordinal));
    }

    [Fact]
    public void New_values_in_a_switch_table_change_its_function_and_are_copied_not_refused()
    {
        var d = DiffPairs.Diff("switch-table-values-changed");
        var table = PairDiff.StaticUsedBy(d.After, "speed_of", "CSWTCH");

        Expect.ChangedAndIncluded(d, "speed_of");
        Expect.Unchanged(d, "lanes_of");
        Assert.Empty(d.Result.Refusals);
        Assert.Empty(d.Result.Data);
        var copy = Assert.IsType<ElfDataSection>(Assert.Contains(table, d.Defined).Section);
        Assert.Contains(25000,
            Enumerable.Range(0, copy.Data.Length / 4).Select(i => BitConverter.ToInt32(copy.Data, i * 4)));
        Assert.DoesNotContain(d.Result.References, r => r.TargetName.StartsWith("CSWTCH", StringComparison.Ordinal));
    }

    [Fact]
    public void A_changed_function_gets_its_own_ratelimit_state_and_the_others_keep_theirs()
    {
        var d = DiffPairs.Diff("ratelimit-state-per-use");

        Expect.ChangedAndIncluded(d, "report_drop");
        Expect.Unchanged(d, "report_overrun");
        var state = PairDiff.StaticUsedBy(d.After, "report_drop", "_rs");
        Assert.Equal(ElfSymbolBinding.Local, Assert.Contains(state, d.Defined).Binding);
        Assert.Single(d.Defined.Keys, name => name.StartsWith("_rs.", StringComparison.Ordinal));
        Assert.DoesNotContain(d.Result.References, r => r.TargetName.StartsWith("_rs", StringComparison.Ordinal));
        Expect.ExternalReference(d, "___ratelimit");
    }

    [Fact]
    public void A_debug_descriptor_whose_line_only_moved_leaves_its_function_unchanged()
    {
        var d = DiffPairs.Diff("dynamic-debug-descriptor");

        Expect.ChangedAndIncluded(d, "xmit");
        var recv = d.Function("recv");
        Assert.Equal(FunctionChange.Unchanged, recv.Kind);
        Assert.NotNull(recv.Note);
        Expect.Absent(d, "recv");
        var descriptor = Assert.Single(d.Defined.Values,
            s => s.Name.StartsWith("__UNIQUE_ID_ddebug", StringComparison.Ordinal));
        Assert.Equal("__dyndbg", descriptor.Section!.Name);
        Assert.Empty(d.Result.Data);
        Assert.DoesNotContain(d.Result.References,
            r => r.TargetName.StartsWith("__UNIQUE_ID", StringComparison.Ordinal));
    }
}
