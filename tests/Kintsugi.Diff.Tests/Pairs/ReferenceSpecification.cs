using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>
/// What included code uses but does not define becomes a load-time reference, named so that statics never collide.
/// </summary>
public class ReferenceSpecification
{
    [Fact]
    public void A_changed_function_calling_a_static_of_the_unit_gets_a_local_reference_under_the_tagged_name()
    {
        var d = DiffPairs.Diff("local-function-reference");

        Expect.ChangedAndIncluded(d, "verify");
        Expect.Unchanged(d, "checksum", "verify_header");
        var reference = Expect.ReferenceToUnit(d, "checksum", isLocal: true, ReferenceTargetKind.Function);
        Assert.Equal(DiffPairs.Tag + "local_checksum", reference.OutputName);
        var site = Assert.Single(reference.Sites);
        Assert.Equal(".text.verify", site.Section);
        Assert.Equal((uint)X86RelocationType.PC32, site.Type);
        Assert.Contains(reference.OutputName, d.RelocationTargets(".text.verify"));
    }

    [Fact]
    public void A_changed_function_calling_a_global_of_the_unit_gets_a_global_reference_under_its_own_name()
    {
        var d = DiffPairs.Diff("global-function-reference");

        Expect.ChangedAndIncluded(d, "charge");
        Expect.Unchanged(d, "compute_quota");
        var reference = Expect.ReferenceToUnit(d, "compute_quota", isLocal: false, ReferenceTargetKind.Function);
        Assert.Equal("compute_quota", reference.OutputName);
        Assert.Contains("compute_quota", d.RelocationTargets(".text.charge"));
    }

    [Fact]
    public void A_call_to_a_function_outside_the_unit_is_a_global_reference_not_defined_in_the_unit()
    {
        var d = DiffPairs.Diff("global-function-reference");

        Expect.ExternalReference(d, "capable");
        Expect.ExternalReference(d, "__fentry__");
    }

    [Fact]
    public void Existing_static_and_global_variables_are_referenced_not_copied()
    {
        var d = DiffPairs.Diff("local-data-reference");

        Expect.ChangedAndIncluded(d, "note_close");
        var local = Expect.ReferenceToUnit(d, "open_count", isLocal: true, ReferenceTargetKind.Object);
        Assert.Equal(2, local.Sites.Count);
        Expect.ReferenceToUnit(d, "close_count", isLocal: false, ReferenceTargetKind.Object);
        Assert.Empty(d.Result.Data);
        Assert.DoesNotContain(d.Output.Sections, s => s.Name.StartsWith(".bss", StringComparison.Ordinal)
            || s.Name.StartsWith(".data", StringComparison.Ordinal));
    }

    [Fact]
    public void A_new_function_is_defined_in_the_output_and_never_a_reference()
    {
        var d = DiffPairs.Diff("static-callee-moved");

        Assert.Equal(FunctionChange.New, d.Kind("clamp_key"));
        Assert.Contains("clamp_key", d.Defined.Keys);
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == "clamp_key"
            || r.OutputName.EndsWith("clamp_key", StringComparison.Ordinal));
        Assert.Contains("clamp_key", d.RelocationTargets(".text.store_key"));
        Expect.ReferenceToUnit(d, "table", isLocal: true, ReferenceTargetKind.Object);
    }
}

/// <summary>Callbacks written with kpatch's macros, and shadow variables.</summary>
public class CallbackAndShadowSpecification
{
    private static readonly string[] Callbacks =
    [
        "__kintsugi_callback_post_patch_reset_retries", "__kintsugi_callback_post_unpatch_after_unpatch",
        "__kintsugi_callback_pre_patch_check_conn", "__kintsugi_callback_pre_unpatch_before_unpatch",
    ];

    [Fact]
    public void Every_kind_of_kpatch_callback_is_listed_and_defined_in_the_output_under_its_wrapper_name()
    {
        var d = DiffPairs.Diff("callbacks");

        Assert.Equal(Callbacks, d.Result.Callbacks);
        Assert.All(Callbacks, name => Assert.StartsWith(KernelNames.CallbackPrefix, name, StringComparison.Ordinal));
        foreach (var name in Callbacks)
        {
            Assert.Equal(FunctionChange.New, d.Kind(name));
            var symbol = Assert.Contains(name, d.Defined);
            Assert.Equal(ElfSymbolBinding.Global, symbol.Binding);
            Assert.Equal(ElfSymbolType.Function, symbol.Type);
        }
        Expect.ChangedAndIncluded(d, "conn_retry");
    }

    [Fact]
    public void A_callback_reaches_existing_state_through_a_load_time_reference()
    {
        var d = DiffPairs.Diff("callbacks");

        var state = Expect.ReferenceToUnit(d, "default_conn", isLocal: false, ReferenceTargetKind.Object);
        Assert.Contains(state.Sites, s => s.Section == ".text.__kintsugi_callback_post_patch_reset_retries");
        Assert.DoesNotContain(d.Result.Data, x => x.Kind == DataChange.Changed);
    }

    [Fact]
    public void Shadow_variable_calls_become_global_references_and_the_constructor_is_defined_in_the_output()
    {
        var d = DiffPairs.Diff("shadow-variable");

        Expect.ChangedAndIncluded(d, "sock_send");
        Expect.ChangedAndIncluded(d, "sock_release");
        Assert.Single(Expect.ExternalReference(d, "klp_shadow_get_or_alloc").Sites);
        Assert.Single(Expect.ExternalReference(d, "klp_shadow_free").Sites);
        Assert.Equal(FunctionChange.New, d.Kind("sent_bytes_ctor"));
        Assert.Equal(ElfSymbolBinding.Local, Assert.Contains("sent_bytes_ctor", d.Defined).Binding);
        Assert.Contains("sent_bytes_ctor", d.RelocationTargets(".text.sock_send"));
        Assert.Empty(d.Result.Refusals);
    }
}

/// <summary>
/// The kernel's tables of entries pointing into code keep exactly the entries of the included functions.
/// </summary>
public class SpecialSectionSpecification
{
    [Fact]
    public void The_jump_table_keeps_the_changed_function_s_entry_with_a_reference_to_the_vmlinux_static_key()
    {
        var d = DiffPairs.Diff("static-key-branch");
        Assert.Equal(32UL, d.After.FindSection("__jump_table")!.Size);

        Expect.ChangedAndIncluded(d, "send_packet");
        Expect.Unchanged(d, "recv_packet");
        Assert.Equal(16UL, Assert.Single(d.OutputSections("__jump_table")).Size);
        var targets = d.RelocationTargets("__jump_table");
        Assert.Equal([DiffPairs.Tag + "send_packet", DiffPairs.Tag + "send_packet", "tracing_enabled"], targets);
        var key = Expect.ReferenceToUnit(d, "tracing_enabled", isLocal: false, ReferenceTargetKind.Object);
        Assert.Contains(key.Sites, s => s.Section == "__jump_table");
    }

    [Theory]
    [InlineData(null)]
    [InlineData("pairs_mod")]
    public void A_static_key_the_fix_adds_is_defined_in_the_output_with_the_jump_entry_pointing_at_it(string? module)
    {
        var d = DiffPairs.Diff("new-static-key", module);

        Expect.ChangedAndIncluded(d, "handle_event");
        Assert.Equal(new DataDiff("event_audit", DataChange.New, IsLocal: false), Assert.Single(d.Result.Data));
        Assert.Contains("event_audit", d.Defined.Keys);
        Assert.Equal([DiffPairs.Tag + "handle_event", DiffPairs.Tag + "handle_event", "event_audit"],
            d.RelocationTargets("__jump_table"));
        Assert.DoesNotContain(d.Result.References, r => r.TargetName == "event_audit");
    }

    [Fact]
    public void The_exception_table_keeps_only_the_changed_function_s_entry()
    {
        var d = DiffPairs.Diff("exception-table-entry");
        Assert.Equal(24UL, d.After.FindSection("__ex_table")!.Size);

        Expect.ChangedAndIncluded(d, "read_flag");
        Expect.Unchanged(d, "read_mode");
        var table = Assert.IsType<ElfDataSection>(Assert.Single(d.OutputSections("__ex_table")));
        Assert.Equal(12, table.Data.Length);
        Assert.Equal(3, BitConverter.ToInt32(table.Data, 8));
        Assert.Equal([DiffPairs.Tag + "read_flag", DiffPairs.Tag + "read_flag"], d.RelocationTargets("__ex_table"));
    }

    [Fact]
    public void A_runtime_constant_in_changed_code_is_read_from_its_variable_since_the_kernel_patches_only_vmlinux()
    {
        // 6.11's runtime_const_ptr: a movabs of a placeholder that the kernel overwrites at boot in vmlinux alone.
        var d = DiffPairs.Diff("runtime-constant-pointer");
        Assert.NotNull(d.After.FindSection("runtime_ptr_USER_PTR_MAX"));

        Expect.ChangedAndIncluded(d, "user_range_ok");
        Expect.ChangedAndIncluded(d, "bucket");
        Assert.Empty(d.Result.Refusals);
        Assert.DoesNotContain(d.Output.Sections, s => s.Name.StartsWith("runtime_", StringComparison.Ordinal));
        // Each movabs became a RIP-relative load of the variable (REX.W 8B /r, mod 00 r/m 101) and a 3-byte nop.
        var user = Expect.ExternalReference(d, "USER_PTR_MAX");
        var buckets = Expect.ReferenceToUnit(d, "bucket_table", isLocal: true, ReferenceTargetKind.Object);
        foreach (var site in user.Sites.Concat(buckets.Sites))
        {
            var code = Assert.IsType<ElfDataSection>(d.Output.FindSection(site.Section)).Data;
            var load = code.AsSpan((int)site.Offset - 3, 10).ToArray();
            Assert.Equal((uint)X86RelocationType.PC32, site.Type);
            Assert.Equal(-4, site.Addend);
            Assert.True((load[0] & 0xfb) == 0x48 && load[1] == 0x8b && (load[2] & 0xc7) == 0x05,
                Convert.ToHexString(load));
            Assert.Equal([0x0f, 0x1f, 0x00], load[7..]);
        }
        Assert.DoesNotContain(d.Output.Sections.OfType<ElfDataSection>()
            .Where(s => s.Flags.HasFlag(ElfSectionFlags.ExecInstr)),
            s => s.Data.AsSpan().IndexOf((byte[])[0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01]) >= 0);
    }

    [Fact]
    public void A_paravirt_table_whose_last_entry_is_short_keeps_the_changed_function_s_entry_padded_to_its_stride()
    {
        // Debian 11's 5.10 layout: 12 bytes of data per entry on a 16-byte stride, the last entry not padded.
        var d = DiffPairs.Diff("paravirt-site-short-last-entry");
        Assert.Equal(28UL, d.After.FindSection(".parainstructions")!.Size);

        Expect.ChangedAndIncluded(d, "interrupt_flag");
        Expect.Unchanged(d, "irqs_were_enabled");
        Assert.Empty(d.Result.Refusals);
        var table = Assert.IsType<ElfDataSection>(Assert.Single(d.OutputSections(".parainstructions")));
        Assert.Equal(16, table.Data.Length);
        Assert.Equal(5, table.Data[8]);
        Assert.Equal(1, BitConverter.ToInt16(table.Data, 10));
        Assert.Equal([DiffPairs.Tag + "interrupt_flag"], d.RelocationTargets(".parainstructions"));
    }

    [Fact]
    public void A_changed_exported_function_is_patched_and_its_export_entry_stays_with_the_running_kernel()
    {
        var d = DiffPairs.Diff("exported-function-changed");
        Assert.NotNull(d.After.FindSection("___ksymtab+buffer_space"));

        Expect.ChangedAndIncluded(d, "buffer_space");
        Expect.Unchanged(d, "buffer_full");
        Assert.Empty(d.Result.Refusals);
        Assert.Empty(d.Result.Data);
        Assert.DoesNotContain(d.Output.Sections, s => s.Name.Contains("ksymtab", StringComparison.Ordinal));
    }

    [Fact]
    public void The_mcount_table_lists_exactly_the_included_functions()
    {
        var d = DiffPairs.Diff("shadow-variable");

        Assert.Equal(
            [DiffPairs.Tag + "sock_release", DiffPairs.Tag + "sock_send", "sent_bytes_ctor"],
            d.RelocationTargets("__mcount_loc").Order(StringComparer.Ordinal));
    }
}
