using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Naming;

/// <summary>
/// The kernel's naming rules, each stated once in <see cref="KernelNames"/>, read the names the kernel, gcc and
/// objtool really give (from 6.1 and 6.12 objects and kernel headers).
/// </summary>
public class KernelNamesSpecification
{
    [Theory]
    [InlineData("__pfx_cmdline_proc_show", true)]
    [InlineData("__cfi_cmdline_proc_show", true)]
    [InlineData("cmdline_proc_show", false)]
    [InlineData("pfx_table", false)]
    public void Padding_before_a_function_is_named_by_objtool_or_kcfi_and_is_no_function(string symbol, bool padding) =>
        Assert.Equal(padding, KernelNames.IsPadding(symbol));

    [Theory]
    [InlineData("dev_check.cold", "dev_check")]
    [InlineData("tcp_v4_rcv.cold.12", "tcp_v4_rcv")]
    [InlineData("scale.constprop.0.cold", "scale.constprop.0")]
    [InlineData("dev_check", null)]
    public void A_cold_part_belongs_to_the_function_named_before_dot_cold(string symbol, string? parent) =>
        Assert.Equal(parent, KernelNames.ColdPartParent(symbol));

    [Theory]
    [InlineData("count.12", true, "count", 12)]
    [InlineData("__func__.3", true, "__func__", 3)]
    [InlineData("request_cost.isra.0", true, "request_cost.isra", 0)]
    [InlineData("count", false, "count", 0)]
    public void A_numbered_static_is_its_base_name_and_a_number(string symbol, bool numbered, string baseName,
        long number)
    {
        Assert.Equal(numbered, KernelNames.IsNumberedStatic(symbol, out var actualBase, out var actualNumber));
        Assert.Equal(baseName, actualBase);
        Assert.Equal(number, actualNumber);
    }

    [Theory]
    [InlineData("__key.7", ElfSymbolBinding.Local, ".bss.__key.7", true)]
    [InlineData("__already_done.2", ElfSymbolBinding.Local, ".data.once", true)]
    [InlineData("__func__.0", ElfSymbolBinding.Local, ".rodata.__func__.0", true)]
    [InlineData("CSWTCH.41", ElfSymbolBinding.Local, ".rodata.CSWTCH.41", true)]
    [InlineData("__UNIQUE_ID_ddebug412.5", ElfSymbolBinding.Local, "__dyndbg", true)]
    [InlineData("print_once_flag", ElfSymbolBinding.Local, ".data.once", true)]
    [InlineData("__key", ElfSymbolBinding.Global, ".bss.__key", false)]
    [InlineData("count.12", ElfSymbolBinding.Local, ".data.count.12", false)]
    public void Per_use_statics_are_known_by_base_name_or_section(string name, ElfSymbolBinding binding, string section,
        bool perUse)
    {
        var symbol = new ElfSymbol(name)
        {
            Binding = binding,
            Type = ElfSymbolType.Object,
            Section = new ElfNoBitsSection(section, 8),
        };
        Assert.Equal(perUse, KernelNames.IsPerUseStatic(symbol));
    }

    [Theory]
    [InlineData("__kintsugi_callback_pre_patch_setup", "pre_patch")]
    [InlineData("__kintsugi_callback_post_unpatch_undo", "post_unpatch")]
    [InlineData("__kintsugi_callback_post_patch_", null)]
    [InlineData("__kintsugi_callback_on_load_setup", null)]
    [InlineData("kintsugi_callback_pre_patch_setup", null)]
    public void A_callback_is_named_by_its_kind_and_function(string symbol, string? kind) =>
        Assert.Equal(kind, KernelNames.CallbackKind(symbol));

    [Fact]
    public void A_wrapper_of_an_unknown_kind_is_still_a_callback_so_that_the_builder_refuses_it()
    {
        Assert.True(KernelNames.IsCallback("__kintsugi_callback_on_load_setup"));
        Assert.Null(KernelNames.CallbackKind("__kintsugi_callback_on_load_setup"));
        Assert.False(KernelNames.IsCallback("kintsugi_callback_pre_patch_setup"));
    }

    [Fact]
    public void A_static_call_trampoline_names_its_key_and_a_tracepoint_key_names_its_tracepoint()
    {
        Assert.Equal("__SCK__might_resched", KernelNames.StaticCallKeyOf("__SCT__might_resched"));
        Assert.Null(KernelNames.StaticCallKeyOf("might_resched"));
        Assert.Equal("pkt_sent", KernelNames.TracepointOf("__tracepoint_pkt_sent", KeyUse.StaticBranch));
        Assert.Equal("pkt_sent", KernelNames.TracepointOf("__SCK__tp_func_pkt_sent", KeyUse.StaticCall));
        Assert.Null(KernelNames.TracepointOf("__SCK__tp_func_pkt_sent", KeyUse.StaticBranch));
    }

    [Theory]
    [InlineData(".init.text", true)]
    [InlineData(".exit.text", true)]
    [InlineData(".meminit.text", true)]
    [InlineData(".head.text", true)]
    [InlineData(".init.data", true)]
    [InlineData(".text.init_module", false)]
    [InlineData(".text.unlikely", false)]
    public void Code_and_data_in_init_sections_are_freed_after_boot_or_load(string section, bool init) =>
        Assert.Equal(init, KernelNames.IsInitSection(section));
}
