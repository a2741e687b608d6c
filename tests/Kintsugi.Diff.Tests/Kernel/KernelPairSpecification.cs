using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Kernel;

/// <summary>
/// The kernel special sections, on real before/after compilations of units of the 6.1 cloud kernel: the
/// differ's output keeps exactly the table entries of the code it includes (compared with the after object's
/// entries, read independently), binds their keys as load-time references, and refuses what a livepatch
/// cannot carry, naming it.
/// </summary>
[Collection(KernelCorpusCollection.Name)]
public sealed class KernelPairSpecification
{
    private static async Task<KernelPair> DiffAsync(KernelEdit edit) => (await KernelPairs.GetAsync()).Diff(edit);

    private static ElfObject Built(KernelPair pair, string changedFunction)
    {
        Assert.False(pair.Result.IsRefused,
            string.Join("\n", pair.Result.Refusals.Select(r => $"{r.Rule} {r.Symbol}: {r.Message}")));
        Assert.Contains(pair.Result.Functions, f => f.Name == changedFunction && f.Kind == FunctionChange.Changed);
        return Assert.IsType<ElfObject>(pair.Result.Output);
    }

    /// <summary>
    /// Asserts that the output's entries of <paramref name="table"/> are exactly the after object's entries for the
    /// code the output includes (at least one), and that the after object has others, which were dropped.
    /// Returns the kept entries with, for each, the after object's entry it came from.
    /// </summary>
    private static IReadOnlyList<(TableEntry Kept, TableEntry Source)> KeepsExactlyTheEntriesOfIncludedCode(
        KernelPair pair, string table, int entrySize)
    {
        var output = pair.Result.Output!;
        var included = KernelTables.CodeSections(output);
        var all = KernelTables.Entries(pair.After, table, entrySize);
        var expected = all.Where(e => e.Code.Section is { } section && included.Contains(section)).ToList();
        var kept = KernelTables.Entries(output, table, entrySize);

        Assert.True(expected.Count > 0,
            $"the included code ({string.Join(", ", included)}) has no {table} entries in the after object: the edit " +
            $"does not exercise {table}");
        // In the after object's order (several alternatives may patch one instruction, in order).
        Assert.Equal(expected.Select(e => e.Code.Where), kept.Select(e => e.Code.Where));
        Assert.True(all.Count > expected.Count,
            $"every {table} entry of the unit belongs to included code, so dropping the others is not shown");
        return [.. kept.Zip(expected)];
    }

    private static LoadTimeReference BoundAtLoadTime(KernelPair pair, string name, string table)
    {
        var reference = Assert.Single(pair.Result.References, r => r.TargetName == name);
        Assert.Contains(reference.Sites, s => s.Section == table);
        return reference;
    }

    [Fact]
    public async Task
        A_changed_function_using_a_static_branch_keeps_exactly_its_jump_table_entries_with_the_key_bound_at_load_time()
    {
        var pair = await DiffAsync(KernelEdits.StaticBranch);
        Built(pair, "psi_memstall_enter");

        var entries = KeepsExactlyTheEntriesOfIncludedCode(pair, "__jump_table", 16);

        // Code, target and key (whose low bits say which way the branch goes) as in the after object, the key now
        // undefined.
        foreach (var (kept, source) in entries)
        {
            Assert.Equal(source.Fields[4].Where, kept.Fields[4].Where);
            Assert.Null(kept.Fields[8].Section);
            Assert.Equal((source.Fields[8].Symbol, source.Fields[8].Addend),
                (kept.Fields[8].Symbol, kept.Fields[8].Addend));
        }
        Assert.Contains(entries, e => e.Kept.Fields[8].Symbol == "psi_disabled");
        var reference = BoundAtLoadTime(pair, "psi_disabled", "__jump_table");
        Assert.Equal(entries.Count(e => e.Kept.Fields[8].Symbol == "psi_disabled"),
            reference.Sites.Count(s => s.Section == "__jump_table"));
        Assert.True(reference.DefinedInUnit);
    }

    [Fact]
    public async Task A_warning_in_a_changed_function_keeps_its_bug_table_entry()
    {
        var pair = await DiffAsync(KernelEdits.Warning);
        Built(pair, "kthread_bind_mask");

        var entries = KeepsExactlyTheEntriesOfIncludedCode(pair, "__bug_table", 12);

        // The file name, line and flags of each warning come along.
        Assert.All(entries, e => Assert.Equal(e.Source.Bytes.AsSpan(8).ToArray(), e.Kept.Bytes.AsSpan(8).ToArray()));
        Assert.All(entries, e => Assert.Equal(e.Source.Fields[4].Where, e.Kept.Fields[4].Where));
    }

    [Fact]
    public async Task A_user_access_in_a_changed_function_keeps_its_exception_table_entries()
    {
        var pair = await DiffAsync(KernelEdits.UserAccess);
        Built(pair, "copy_fpstate_to_sigframe");

        var entries = KeepsExactlyTheEntriesOfIncludedCode(pair, "__ex_table", 12);

        // The fixup lands in the included code, at the same place; the handler type is unchanged.
        Assert.All(entries, e => Assert.Equal(e.Source.Fields[4].Where, e.Kept.Fields[4].Where));
        Assert.All(entries, e => Assert.Equal(e.Source.Bytes.AsSpan(8).ToArray(), e.Kept.Bytes.AsSpan(8).ToArray()));
    }

    [Fact]
    public async Task Only_the_feature_test_fragments_of_included_code_come_with_it()
    {
        var pair = await DiffAsync(KernelEdits.UserAccess);
        var output = Built(pair, "copy_fpstate_to_sigframe");

        // .altinstr_aux holds the static_cpu_has tests of the whole unit, __init code (fpu__get_fpstate_size) and
        // __fpu_restore_sig among it: the included fragments test boot_cpu_data and jump back into included code only.
        var aux = output.FindSection(".altinstr_aux")!;
        var targets = output.GetRelocationSections(aux).SelectMany(r => r.Relocations).Select(KernelTables.PlaceOf)
            .ToList();
        Assert.Contains(targets, t => t.Section is not null);
        Assert.All(targets,
            t =>
            Assert.True(t.Section is null ? t.Symbol == "boot_cpu_data"
            : KernelTables.CodeSections(output).Contains(t.Section), t.ToString()));
        Assert.DoesNotContain(pair.Result.References, r => r.TargetName == "__fpu_restore_sig");
    }

    [Fact]
    public async Task Alternatives_in_a_changed_function_keep_their_entries_and_replacement_code()
    {
        var pair = await DiffAsync(KernelEdits.Alternatives);
        var output = Built(pair, "save_fpregs_to_fpstate");

        var entries = KeepsExactlyTheEntriesOfIncludedCode(pair, ".altinstructions", 12);

        Assert.All(entries,
            e =>
            Assert.Equal((".altinstr_replacement", e.Source.Fields[4].Offset),
            (e.Kept.Fields[4].Section, e.Kept.Fields[4].Offset)));
        Assert.All(entries, e => Assert.Equal(e.Source.Bytes.AsSpan(8).ToArray(), e.Kept.Bytes.AsSpan(8).ToArray()));
        var replacement = Assert.IsType<ElfDataSection>(output.FindSection(".altinstr_replacement"));
        Assert.Equal(((ElfDataSection)pair.After.FindSection(".altinstr_replacement")!).Data, replacement.Data);
    }

    [Fact]
    public async Task A_static_call_in_a_changed_function_keeps_its_site_with_the_key_bound_at_load_time()
    {
        var pair = await DiffAsync(KernelEdits.StaticCall);
        Built(pair, "shrink_dcache_parent");

        var entries = KeepsExactlyTheEntriesOfIncludedCode(pair, ".static_call_sites", 8);

        Assert.All(entries,
            e =>
            Assert.Equal((null, e.Source.Fields[4].Symbol, e.Source.Fields[4].Addend),
            (e.Kept.Fields[4].Section, e.Kept.Fields[4].Symbol, e.Kept.Fields[4].Addend)));
        Assert.Contains(entries, e => e.Kept.Fields[4].Symbol == "__SCK__cond_resched");
        BoundAtLoadTime(pair, "__SCK__cond_resched", ".static_call_sites");
    }

    [Fact]
    public async Task Return_thunk_and_retpoline_sites_of_a_changed_function_are_kept_exactly()
    {
        var pair = await DiffAsync(KernelEdits.IndirectCall);
        Built(pair, "vfs_read");

        KeepsExactlyTheEntriesOfIncludedCode(pair, ".return_sites", 4);
        KeepsExactlyTheEntriesOfIncludedCode(pair, ".retpoline_sites", 4);
        // 6.1 has no call depth tracking (6.2): no .call_sites to keep, and none made up.
        Assert.Null(pair.After.FindSection(".call_sites"));
        Assert.Null(pair.Result.Output!.FindSection(".call_sites"));
    }

    [Fact]
    public async Task The_ftrace_location_of_each_included_function_is_kept()
    {
        var pair = await DiffAsync(KernelEdits.TracedFunction);
        var output = Built(pair, "kstrdup");

        var entries = KeepsExactlyTheEntriesOfIncludedCode(pair, "__mcount_loc", 8);

        var functions = output.SymbolTable!.Symbols.Count(s => s.Type == ElfSymbolType.Function
            && s.Section is not null);
        Assert.Equal(functions, entries.Count);
    }

    [Fact]
    public async Task Orc_unwind_entries_match_the_included_code()
    {
        var pair = await DiffAsync(KernelEdits.Unwinding);
        var output = Built(pair, "tcp_sock_set_keepcnt");

        var entries = KeepsExactlyTheEntriesOfIncludedCode(pair, ".orc_unwind_ip", 4);

        // .orc_unwind holds the unwind rule of each .orc_unwind_ip entry, at the same index.
        var after = ((ElfDataSection)pair.After.FindSection(".orc_unwind")!).Data;
        var kept = Assert.IsType<ElfDataSection>(output.FindSection(".orc_unwind")).Data;
        Assert.Equal(entries.Count * 6, kept.Length);
        Assert.All(entries,
            e =>
            Assert.Equal(after.AsSpan(e.Source.Index * 6, 6).ToArray(), kept.AsSpan(e.Kept.Index * 6, 6).ToArray()));
    }

    [Fact]
    public async Task A_static_branch_on_a_key_of_the_patched_module_is_refused_with_what_to_do_instead()
    {
        var pair = await DiffAsync(KernelEdits.ModuleStaticBranch);

        Assert.Equal("kvm", pair.Object.Value);
        Assert.Contains(pair.Result.Functions, f => f.Name == "kvm_apic_accept_pic_intr" && f.Kind
            == FunctionChange.Changed);
        var refusal = Assert.Single(pair.Result.Refusals, r => r.Symbol == "apic_hw_disabled");
        Assert.Equal(RefusalRule.SpecialSectionUnsupported, refusal.Rule);
        Assert.Contains("static key apic_hw_disabled of module kvm", refusal.Message);
        Assert.Contains("static_key_enabled()", refusal.Message);
        Assert.Null(pair.Result.Output);
    }

    [Fact]
    public async Task Static_calls_whose_keys_live_in_the_patched_module_are_refused_in_this_unit_or_another()
    {
        var pair = await DiffAsync(KernelEdits.ModuleStaticCall);

        Assert.Equal("kvm", pair.Object.Value);
        Assert.Contains(pair.Result.Functions, f => f.Name == "kvm_pmu_rdpmc" && f.Kind == FunctionChange.Changed);
        // One key is defined in pmu.c, the other in x86.c: both are the module's, and neither is exported by vmlinux.
        foreach (var key in new[] { "__SCK__kvm_x86_pmu_rdpmc_ecx_to_pmc", "__SCK__kvm_x86_get_cpl" })
        {
            var refusal = Assert.Single(pair.Result.Refusals, r => r.Symbol == key);
            Assert.Equal(RefusalRule.SpecialSectionUnsupported, refusal.Rule);
            Assert.Contains("static call", refusal.Message);
            Assert.Contains("call the function directly", refusal.Message, StringComparison.OrdinalIgnoreCase);
        }
        Assert.Null(pair.Result.Output);
    }

    [Fact]
    public async Task A_module_calling_a_static_call_of_vmlinux_keeps_its_sites_on_the_exported_trampoline()
    {
        var pair = await DiffAsync(KernelEdits.ModuleCallsVmlinuxStaticCall);

        Assert.Equal("virtio_net", pair.Object.Value);
        Assert.False(pair.Result.IsRefused,
            string.Join("\n", pair.Result.Refusals.Select(r => $"{r.Rule} {r.Symbol}: {r.Message}")));
        Assert.Contains(pair.Result.Functions, f => f.Kind == FunctionChange.Changed);
        var entries = KeepsExactlyTheEntriesOfIncludedCode(pair, ".static_call_sites", 8);
        // The key is not exported: the site names the trampoline, which the module loader links and from which the
        // kernel finds the key (static_call_add_module), as for virtio_net itself.
        Assert.Contains(entries, e => e.Kept.Fields[4].Symbol == "__SCT__cond_resched");
        Assert.DoesNotContain(pair.Result.References, r => r.TargetName == "__SCK__cond_resched");
    }

    [Fact]
    public async Task A_table_the_engine_does_not_know_with_an_entry_for_included_code_is_refused_by_name()
    {
        var pair = await DiffAsync(KernelEdits.UnknownTable);

        Assert.Contains(pair.Result.Functions, f => f.Name == "has_capability" && f.Kind == FunctionChange.Changed);
        var refusal = Assert.Single(pair.Result.Refusals);
        Assert.Equal((RefusalRule.UnsupportedSection, ".kintsugi_probe_sites"), (refusal.Rule, refusal.Symbol));
        Assert.Contains(".kintsugi_probe_sites", refusal.Message);
        Assert.Null(pair.Result.Output);
    }

    [Fact]
    public async Task Included_code_referring_to_unnamed_writable_data_of_an_unknown_section_is_refused_by_name()
    {
        var pair = await DiffAsync(KernelEdits.UnknownData);

        Assert.Contains(pair.Result.Functions, f => f.Name == "find_vpid" && f.Kind == FunctionChange.Changed);
        var refusal = Assert.Single(pair.Result.Refusals);
        Assert.Equal((RefusalRule.UnsupportedSection, ".kintsugi_state"), (refusal.Rule, refusal.Symbol));
        Assert.Contains("Give the data a name", refusal.Message);
        Assert.Null(pair.Result.Output);
    }

    [Fact]
    public async Task Warnings_and_debug_messages_that_only_moved_down_a_line_build_nothing()
    {
        var pair = await DiffAsync(KernelEdits.WarningLinesOnly);

        // The edit did move them: the bug table entries and the dynamic debug descriptor carry new line numbers.
        var before = KernelTables.Entries(pair.Before, "__bug_table", 12);
        var after = KernelTables.Entries(pair.After, "__bug_table", 12);
        Assert.Equal(before.Count, after.Count);
        Assert.Contains(before.Zip(after), p => !p.First.Bytes.AsSpan(8).SequenceEqual(p.Second.Bytes.AsSpan(8)));
        Assert.NotEqual(((ElfDataSection)pair.Before.FindSection("__dyndbg")!).Data,
            ((ElfDataSection)pair.After.FindSection("__dyndbg")!).Data);

        Assert.All(pair.Result.Functions, f => Assert.Equal(FunctionChange.Unchanged, f.Kind));
        Assert.False(pair.Result.HasChanges);
        Assert.Empty(pair.Result.Refusals);
        Assert.Empty(pair.Result.Data);
        Assert.Null(pair.Result.Output);
    }
}
