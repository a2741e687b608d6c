namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>Fixes livepatch cannot express are refused, naming the symbol and telling the author what to do.</summary>
public class RefusalSpecification
{
    [Fact]
    public void A_new_initial_value_of_a_global_variable_is_refused_naming_it()
    {
        var d = DiffPairs.Diff("global-data-initializer-changed");

        Assert.Equal(new DataDiff("retry_limit", DataChange.Changed, IsLocal: false), Assert.Single(d.Result.Data));
        Expect.Refused(d, RefusalRule.DataChanged, "retry_limit", "klp_shadow_get_or_alloc", "post-patch callback");
    }

    [Fact]
    public void A_shift_by_a_runtime_constant_in_changed_code_is_refused_since_no_one_would_patch_the_copy()
    {
        var d = DiffPairs.Diff("runtime-constant-shift");

        Expect.Refused(d, RefusalRule.SpecialSectionUnsupported, "hash_shift", "bucket_of", "runtime constant",
            "d_hash");
    }

    [Fact]
    public void A_static_array_that_grew_is_refused_naming_it()
    {
        var d = DiffPairs.Diff("static-array-grown");

        Assert.Contains(d.Result.Data, x => x.Name == "history" && x.Kind == DataChange.Changed && x.IsLocal);
        Expect.Refused(d, RefusalRule.DataChanged, "history", "shadow variable");
    }

    [Fact]
    public void A_changed_constant_table_is_refused_naming_it()
    {
        var d = DiffPairs.Diff("const-table-changed");

        Expect.Unchanged(d, "weight_of");
        Expect.Refused(d, RefusalRule.DataChanged, "prio_weights", "shadow variable");
    }

    [Fact]
    public void A_changed_init_function_is_refused_with_the_callback_to_use_instead()
    {
        var d = DiffPairs.Diff("init-function-changed");

        Assert.Equal(FunctionChange.Changed, d.Kind("setup_table"));
        Expect.Unchanged(d, "table_capacity");
        Expect.Refused(d, RefusalRule.InitCodeChanged, "setup_table", ".init.text", "KPATCH_POST_PATCH_CALLBACK");
    }

    [Fact]
    public void A_changed_function_that_calls_init_code_is_refused_naming_the_init_function()
    {
        var d = DiffPairs.Diff("changed-function-calls-init");

        Assert.Equal(FunctionChange.Changed, d.Kind("apply_quirks"));
        Expect.Unchanged(d, "parse_quirks");
        Expect.Refused(d, RefusalRule.InitCodeChanged, "parse_quirks", "freed after boot");
    }

    [Fact]
    public void A_changed_function_reading_new_init_data_is_refused_naming_it()
    {
        var d = DiffPairs.Diff("changed-function-uses-new-initdata");

        Assert.Equal(FunctionChange.Changed, d.Kind("default_weight"));
        Assert.Contains(d.Result.Data, x => x.Name == "boot_weights" && x.Kind == DataChange.New);
        Expect.Refused(d, RefusalRule.InitCodeChanged, "boot_weights", ".init.data", "drop __initdata");
    }

    [Fact]
    public void A_changed_notrace_function_is_refused_and_the_author_told_to_patch_its_callers()
    {
        var d = DiffPairs.Diff("notrace-function-changed");

        Assert.Equal(FunctionChange.Changed, d.Kind("fast_clock"));
        Expect.Unchanged(d, "slow_clock");
        Expect.Refused(d, RefusalRule.NoFtraceEntry, "fast_clock", "Patch its callers");
    }

    [Fact]
    public void A_section_the_differ_does_not_know_that_points_into_changed_code_is_refused_by_name()
    {
        var d = DiffPairs.Diff("unknown-section-refers-to-changed-code");

        Assert.Equal(FunctionChange.Changed, d.Kind("hook_entry"));
        Expect.Refused(d, RefusalRule.UnsupportedSection, ".kintsugi_test_hooks", "will not drop it silently");
    }

    [Fact]
    public void Changed_code_reading_writable_data_without_a_symbol_is_refused_naming_the_section()
    {
        var d = DiffPairs.Diff("changed-code-refers-to-unnamed-writable-data");

        Assert.Equal(FunctionChange.Changed, d.Kind("bump"));
        Expect.Refused(d, RefusalRule.UnsupportedSection, ".data.kintsugi_unnamed", "Give the data a name");
    }

    [Fact]
    public void A_function_pointer_in_a_named_variable_is_ordinary_data_and_not_refused()
    {
        var d = DiffPairs.Diff("function-pointer-in-ops");

        Expect.ChangedAndIncluded(d, "dev_open");
        Expect.Unchanged(d, "dev_release");
        Assert.Empty(d.Result.Refusals);
        Assert.Empty(d.Result.Data);
        Assert.DoesNotContain("dev_ops", d.Defined.Keys);
    }

    [Fact]
    public void A_static_key_of_a_module_is_refused_with_the_alternative()
    {
        var d = DiffPairs.Diff("static-key-branch", module: "pairs_mod");

        Expect.ChangedAndIncluded(DiffPairs.Diff("static-key-branch"), "send_packet");
        Expect.Refused(d, RefusalRule.SpecialSectionUnsupported, "tracing_enabled", "static_key_enabled()");
    }
}

/// <summary>A change that only moves __LINE__ values given to warning and debug helpers is not a change.</summary>
public class LineNumberSpecification
{
    [Theory]
    [InlineData("line-only-might-sleep", new[] { "wait_ready", "wait_idle" })]
    [InlineData("line-only-warn-slowpath", new[] { "check_order" })]
    [InlineData("line-only-printk-line", new[] { "trace_here" })]
    public void
        Moved_line_arguments_of_a_helper_leave_the_function_unchanged_with_a_note(string pair, string[] functions)
    {
        var d = DiffPairs.Diff(pair);
        Assert.All(functions, f => Assert.NotEqual(FunctionBytes(d.Before, f), FunctionBytes(d.After, f)));

        foreach (var function in functions)
        {
            var diff = d.Function(function);
            Assert.Equal(FunctionChange.Unchanged, diff.Kind);
            Assert.Contains("__LINE__", diff.Note, StringComparison.Ordinal);
        }
        Assert.False(d.Result.HasChanges);
        Assert.Null(d.Result.Output);
        Assert.Empty(d.Result.Refusals);
    }

    [Fact]
    public void A_moved_line_argument_in_a_cold_part_leaves_its_function_unchanged_with_a_note()
    {
        var d = DiffPairs.Diff("line-only-in-cold-part");
        Assert.Equal(FunctionBytes(d.Before, "parse_option"), FunctionBytes(d.After, "parse_option"));
        Assert.NotEqual(FunctionBytes(d.Before, "parse_option.cold"), FunctionBytes(d.After, "parse_option.cold"));

        var diff = d.Function("parse_option");
        Assert.Equal(FunctionChange.Unchanged, diff.Kind);
        Assert.Contains("__LINE__", diff.Note, StringComparison.Ordinal);
        Assert.False(d.Result.HasChanges);
        Assert.Null(d.Result.Output);
    }

    [Fact]
    public void A_new_constant_passed_to_another_function_just_before_a_line_helper_is_a_real_change()
    {
        var d = DiffPairs.Diff("constant-argument-before-might-sleep");

        var diff = d.Function("dev_configure");
        Assert.Null(diff.Note);
        Expect.ChangedAndIncluded(d, "dev_configure");
        Assert.True(d.Result.HasChanges);
        Expect.ExternalReference(d, "dev_set_limit");
        Expect.ExternalReference(d, "__might_sleep");
    }

    [Fact]
    public void Moved_BUG_and_WARN_lines_change_only_the_bug_table_and_nothing_is_patched_with_a_note()
    {
        var d = DiffPairs.Diff("line-only-bug-and-warn");
        Assert.NotEqual(Section(d.Before, "__bug_table"), Section(d.After, "__bug_table"));

        Expect.Unchanged(d, "pop_entry", "push_entry");
        Assert.All(d.Result.Functions, f => Assert.Contains("__LINE__", f.Note, StringComparison.Ordinal));
        Assert.False(d.Result.HasChanges);
        Assert.Null(d.Result.Output);
        Assert.Empty(d.Result.Data);
    }

    [Fact]
    public void Among_moved_lines_only_the_really_changed_function_is_patched_with_its_own_bug_entry()
    {
        var d = DiffPairs.Diff("lines-moved-and-real-change");

        Expect.ChangedAndIncluded(d, "pop_entry");
        Assert.NotNull(d.Function("push_entry").Note);
        Expect.Unchanged(d, "push_entry", "peek_entry");
        Assert.Equal([DiffPairs.Tag + "pop_entry"], d.DefinedFunctions);
        var table = Assert.IsType<Kintsugi.Elf.ElfDataSection>(Assert.Single(d.OutputSections("__bug_table")));
        Assert.Equal(12, table.Data.Length);
        Assert.Equal(5, BitConverter.ToUInt16(table.Data, 8));
        Assert.Equal([DiffPairs.Tag + "pop_entry", ".rodata.pop_entry.str1.1"], d.RelocationTargets("__bug_table"));
    }

    private static byte[] FunctionBytes(Kintsugi.Elf.ElfObject elf, string function)
    {
        var symbol = elf.SymbolTable!.Symbols.Single(s => s.Name == function);
        return ((Kintsugi.Elf.ElfDataSection)symbol.Section!).Data.AsSpan((int)symbol.Value, (int)symbol.Size)
            .ToArray();
    }

    private static byte[] Section(Kintsugi.Elf.ElfObject elf, string name) =>
        ((Kintsugi.Elf.ElfDataSection)elf.FindSection(name)!).Data;
}
