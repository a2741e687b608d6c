namespace Kintsugi.Diff.Tests.Binding;

/// <summary>
/// The one binding policy: for every kind of reference the livepatch module makes, an ordinary relocation, a
/// livepatch relocation (and which objects it names), or a refusal; for static branch and static call keys, also an
/// inert site. Exports as Module.symvers of a 6.1 kernel has them (ip_set's, sunrpc's, vmlinux's).
/// </summary>
public class BindingPolicySpecification
{
    private static readonly PatchedObjectName IpmarkModule = PatchedObjectName.Parse("ip_set_hash_ipmark");
    private static readonly KernelExports Exports =
        new(new Dictionary<string, PatchedObjectName>(StringComparer.Ordinal)
        {
            ["printk"] = PatchedObjectName.Vmlinux,
            ["memcg_kmem_enabled_key"] = PatchedObjectName.Vmlinux,
            ["ip_set_get_ipaddr4"] = PatchedObjectName.Parse("ip_set"),
            ["xdr_inline_decode"] = PatchedObjectName.Parse("sunrpc"),
            ["ip_set_hash_ipmark_export"] = IpmarkModule,
            ["__tracepoint_ip_set_add"] = PatchedObjectName.Parse("ip_set"),
            // EXPORT_STATIC_CALL_TRAMP(cond_resched): the trampoline, never the key.
            ["__SCT__cond_resched"] = PatchedObjectName.Vmlinux,
        });

    /// <summary>ip_set_hash_ipmark depends on ip_set (its .modinfo says so), not on sunrpc.</summary>
    private static readonly BindingPolicy ModulePolicy = new(IpmarkModule, Exports,
        new HashSet<string>(StringComparer.Ordinal) { "ip_set", "nfnetlink" });
    private static readonly BindingPolicy VmlinuxPolicy = new(PatchedObjectName.Vmlinux, Exports,
        new HashSet<string>(StringComparer.Ordinal));

    [Fact]
    public void An_export_of_vmlinux_is_an_ordinary_relocation_the_module_loader_links()
    {
        Assert.Equal(BindingKind.Normal, ModulePolicy.ForReference("printk", SymbolHome.Elsewhere).Kind);
        Assert.Equal(BindingKind.Normal, VmlinuxPolicy.ForReference("printk", SymbolHome.Elsewhere).Kind);
        Assert.True(BindingPolicy.LinkedByModuleLoader(Exports, "printk"));
    }

    [Fact]
    public void
        An_export_of_a_module_the_patched_module_depends_on_is_a_livepatch_relocation_applied_with_the_patched_module()
    {
        var binding = ModulePolicy.ForReference("ip_set_get_ipaddr4", SymbolHome.Elsewhere);

        Assert.Equal(BindingKind.Livepatch, binding.Kind);
        Assert.Equal(BindingCase.OtherModuleExport, binding.Case);
        Assert.Equal("ip_set", binding.SymbolObject?.Value);
        Assert.Equal("ip_set_hash_ipmark", binding.RelocationObject?.Value);
        Assert.False(BindingPolicy.LinkedByModuleLoader(Exports, "ip_set_get_ipaddr4"));
    }

    [Fact]
    public void An_export_of_a_module_the_patched_module_does_not_depend_on_is_refused()
    {
        var binding = ModulePolicy.ForReference("xdr_inline_decode", SymbolHome.Elsewhere);

        Assert.Equal(BindingKind.Refused, binding.Kind);
        Assert.Contains("does not depend on", binding.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void An_export_of_the_patched_module_itself_is_a_livepatch_relocation_of_that_module()
    {
        var binding = ModulePolicy.ForReference("ip_set_hash_ipmark_export", SymbolHome.Unit);

        Assert.Equal((BindingKind.Livepatch, BindingCase.OwnModuleExport), (binding.Kind, binding.Case));
        Assert.Equal(("ip_set_hash_ipmark", "ip_set_hash_ipmark"),
            (binding.SymbolObject?.Value, binding.RelocationObject?.Value));
    }

    [Fact]
    public void A_static_of_the_unit_is_that_symbol_even_when_something_else_exports_its_name()
    {
        var binding = ModulePolicy.ForReference("ip_set_get_ipaddr4", SymbolHome.Unit, isLocal: true);

        Assert.Equal((BindingKind.Livepatch, BindingCase.UnitSymbol), (binding.Kind, binding.Case));
        Assert.Equal("ip_set_hash_ipmark", binding.SymbolObject?.Value);
    }

    [Fact]
    public void What_the_patch_defines_links_inside_the_module_whatever_its_name()
    {
        Assert.Equal(BindingKind.Normal, ModulePolicy.ForReference("kpatch_string", SymbolHome.Patch).Kind);
        Assert.Equal(BindingKind.Normal, ModulePolicy.ForReference("ip_set_get_ipaddr4", SymbolHome.Patch).Kind);
    }

    [Fact]
    public void An_unexported_symbol_the_unit_does_not_define_is_located_by_the_builder_and_bound_where_found()
    {
        var open = ModulePolicy.ForReference("nfnl_lock", SymbolHome.Elsewhere);
        Assert.Equal((BindingKind.Livepatch, BindingCase.UnexportedElsewhere), (open.Kind, open.Case));
        Assert.Null(open.SymbolObject);

        // The kernel refuses vmlinux symbols in a module's livepatch relocation sections: vmlinux's are applied with
        // vmlinux.
        var inVmlinux = ModulePolicy.Located(PatchedObjectName.Vmlinux);
        Assert.Equal(("vmlinux", "vmlinux"), (inVmlinux.SymbolObject?.Value, inVmlinux.RelocationObject?.Value));
        var inModule = ModulePolicy.Located(IpmarkModule);
        Assert.Equal(("ip_set_hash_ipmark", "ip_set_hash_ipmark"),
            (inModule.SymbolObject?.Value, inModule.RelocationObject?.Value));
    }

    [Fact]
    public void Keys_of_vmlinux_and_keys_the_patch_defines_keep_their_entries()
    {
        Assert.Equal(BindingKind.Normal,
            ModulePolicy.ForKey("memcg_kmem_enabled_key", SymbolHome.Elsewhere, KeyUse.StaticBranch).Kind);
        Assert.Equal(BindingKind.Normal,
            ModulePolicy.ForKey("kpatch_key.3", SymbolHome.Patch, KeyUse.StaticBranch, isLocal: true).Kind);
        Assert.Equal(BindingKind.Normal,
            ModulePolicy.ForKey("__UNIQUE_ID_ddebug12", SymbolHome.Patch, KeyUse.StaticBranch, true,
            debugDescriptor: true).Kind);
        Assert.Equal(BindingKind.Normal,
            VmlinuxPolicy.ForKey("sched_smt_present", SymbolHome.Unit, KeyUse.StaticBranch).Kind);
    }

    [Fact]
    public void A_tracepoint_whose_key_lives_in_a_module_is_kept_inert()
    {
        var own = ModulePolicy.ForKey("__tracepoint_ipmark_add", SymbolHome.Unit, KeyUse.StaticBranch);
        var call = ModulePolicy.ForKey("__SCK__tp_func_ipmark_add", SymbolHome.Elsewhere, KeyUse.StaticCall);
        var other = ModulePolicy.ForKey("__tracepoint_ip_set_add", SymbolHome.Elsewhere, KeyUse.StaticBranch);

        Assert.All([own, call, other],
            b => Assert.Equal((BindingKind.Inert, BindingCase.InertTracepoint), (b.Kind, b.Case)));
        Assert.Contains("ipmark_add", own.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_static_call_of_vmlinux_whose_trampoline_alone_is_exported_keeps_its_site_on_the_trampoline()
    {
        var call = ModulePolicy.ForKey("__SCK__cond_resched", SymbolHome.Elsewhere, KeyUse.StaticCall);

        Assert.Equal((BindingKind.Normal, BindingCase.VmlinuxStaticCallTrampoline), (call.Kind, call.Case));
        Assert.Contains("__SCT__cond_resched", call.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Any_other_key_of_a_module_is_refused_with_its_alternative()
    {
        var branch = ModulePolicy.ForKey("ipmark_enabled", SymbolHome.Unit, KeyUse.StaticBranch);
        var call = ModulePolicy.ForKey("__SCK__ipmark_hash", SymbolHome.Elsewhere, KeyUse.StaticCall);

        Assert.Equal(BindingKind.Refused, branch.Kind);
        Assert.Contains("static_key_enabled()", branch.Reason, StringComparison.Ordinal);
        Assert.Equal(BindingKind.Refused, call.Kind);
        Assert.Contains("Call the function directly", call.Reason, StringComparison.Ordinal);
    }
}
