using System.Text.RegularExpressions;
using Kintsugi.Elf;

namespace Kintsugi.Diff;

/// <summary>
/// The naming rules of the kernel and of the compilers that build it, by which the differ and the builder read
/// symbols and sections: what a name says about the thing it names. Every such rule lives here, once; a new kernel
/// generation or compiler that names something differently changes this file and nothing else.
/// </summary>
public static partial class KernelNames
{
    // Symbols that are not functions or data of their own.

    /// <summary>
    /// The padding objtool (<c>__pfx_</c>, CALL_PADDING) or the compiler (<c>__cfi_</c>, kCFI) puts before a function
    /// is named like a function; it belongs to the function after it and is never compared, copied or emitted.
    /// </summary>
    public static bool IsPadding(string symbol) =>
        symbol.StartsWith("__pfx_", StringComparison.Ordinal) || symbol.StartsWith("__cfi_", StringComparison.Ordinal);

    /// <summary>The function a <c>.cold</c> part (gcc's out-of-line unlikely code) belongs to, or null.</summary>
    public static string? ColdPartParent(string symbol)
    {
        var cold = symbol.IndexOf(".cold", StringComparison.Ordinal);
        return cold > 0 ? symbol[..cold] : null;
    }

    /// <summary>
    /// A static local the compiler numbers (<c>count.12</c>): the number changes whenever the unit does, so only the
    /// base name means anything.
    /// </summary>
    public static bool IsNumberedStatic(string symbol, out string baseName, out long number)
    {
        var match = Numbered().Match(symbol);
        baseName = match.Success ? match.Groups[1].Value : symbol;
        number = match.Success && long.TryParse(match.Groups[2].Value, out var n) ? n : 0;
        return match.Success;
    }

    /// <summary>The name without its compiler number (<c>__func__.3</c> → <c>__func__</c>).</summary>
    public static string WithoutNumber(string symbol)
    {
        IsNumberedStatic(symbol, out var baseName, out _);
        return baseName;
    }

    /// <summary>
    /// Statics the compiler or a kernel macro makes per use: lock class keys, once and warn flags, __func__, switch
    /// tables, ratelimit states, dynamic-debug descriptors, tracepoint strings. They are never correlated or bound:
    /// new code gets its own copy.
    /// </summary>
    public static bool IsPerUseStatic(ElfSymbol symbol)
    {
        if (symbol.Name.StartsWith(DebugDescriptorPrefix, StringComparison.Ordinal)) return true;
        if (symbol.Binding != ElfSymbolBinding.Local) return false;
        return PerUseBases.Contains(WithoutNumber(symbol.Name)) || symbol.Section?.Name is { } section
            && IsPerUseSection(section);
    }

    private static readonly HashSet<string> PerUseBases = new(StringComparer.Ordinal)
    {
        "__key", "__warned", "__already_done", "__print_once", "__func__", "__FUNCTION__", "__PRETTY_FUNCTION__",
            "CSWTCH",
        "_rs", "descriptor", "__msg", "__mod", "__flags", "__tpstrtab", "__bpf_trace_tp_map", "__compound_literal",
    };

    private static bool IsPerUseSection(string section) =>
        section is "__verbose" or "__dyndbg" or ".data.once" or ".data..once";

    /// <summary>
    /// A dynamic-debug descriptor (pr_debug and friends): one per call site, holding that call's __LINE__.
    /// </summary>
    public static bool IsDebugDescriptor(string symbol, string section) =>
        symbol.StartsWith(DebugDescriptorPrefix, StringComparison.Ordinal) || section is "__dyndbg" or "__verbose";

    private const string DebugDescriptorPrefix = "__UNIQUE_ID_ddebug";

    /// <summary>
    /// The call every traceable function starts with: without it, livepatch cannot redirect the function.
    /// </summary>
    public const string FtraceEntry = "__fentry__";

    /// <summary>How far into a function its ftrace call may sit (after an endbr64 and padding).</summary>
    public const ulong FtraceEntryReach = 16;

    /// <summary>
    /// The kernel's line-taking helpers (WARN, might_sleep, printk and dynamic-debug helpers): they take their
    /// caller's __LINE__ in a register, so a call whose only difference is that number is a moved line.
    /// </summary>
    public static IReadOnlySet<string> LineFunctions { get; } = new HashSet<string>(StringComparer.Ordinal)
    {
        "__warn_printk", "warn_slowpath_fmt", "__might_sleep", "__might_resched", "__might_fault", "__cant_sleep",
        "__cant_migrate", "lockdep_rcu_suspicious", "_printk", "printk", "__dynamic_pr_debug", "__dynamic_dev_dbg",
        "__dynamic_netdev_dbg", "rcu_read_lock_held", "__kasan_check_read", "___might_sleep", "__warn", "report_bug",
    };

    // Static calls and tracepoints.

    /// <summary>A static call's trampoline, <c>__SCT__NAME</c>, called by every site of the static call NAME.</summary>
    public const string StaticCallTrampolinePrefix = "__SCT__";

    /// <summary>A static call's key, <c>__SCK__NAME</c>, which its sites are registered under.</summary>
    public const string StaticCallKeyPrefix = "__SCK__";

    /// <summary>
    /// The key of the static call whose trampoline <paramref name="symbol"/> is, or null when it is none.
    /// </summary>
    public static string? StaticCallKeyOf(string symbol) =>
        symbol.StartsWith(StaticCallTrampolinePrefix, StringComparison.Ordinal)
            ? StaticCallKeyPrefix + symbol[StaticCallTrampolinePrefix.Length..] : null;

    /// <summary>
    /// The trampoline of the static call whose key <paramref name="symbol"/> is, or null when it is none.
    /// </summary>
    public static string? StaticCallTrampolineOf(string symbol) =>
        symbol.StartsWith(StaticCallKeyPrefix, StringComparison.Ordinal)
            ? StaticCallTrampolinePrefix + symbol[StaticCallKeyPrefix.Length..] : null;

    /// <summary>A tracepoint's static key, <c>__tracepoint_NAME</c>.</summary>
    public const string TracepointKeyPrefix = "__tracepoint_";

    /// <summary>A tracepoint's static call key, <c>__SCK__tp_func_NAME</c>.</summary>
    public const string TracepointCallKeyPrefix = StaticCallKeyPrefix + "tp_func_";

    /// <summary>The tracepoint a static key or static call key belongs to, or null.</summary>
    public static string? TracepointOf(string key, KeyUse use)
    {
        var prefix = use == KeyUse.StaticBranch ? TracepointKeyPrefix : TracepointCallKeyPrefix;
        return key.StartsWith(prefix, StringComparison.Ordinal) ? key[prefix.Length..] : null;
    }

    // Livepatch callbacks (Compat/kpatch-macros.h defines them under these names).

    /// <summary>The wrappers the callback macros define: <c>__kintsugi_callback_KIND_FUNCTION</c>.</summary>
    public const string CallbackPrefix = "__kintsugi_callback_";

    /// <summary>
    /// Whether <paramref name="symbol"/> is named as a callback wrapper; one whose kind is unknown is still one, so
    /// that the builder refuses it rather than link it as an ordinary function.
    /// </summary>
    public static bool IsCallback(string symbol) => symbol.StartsWith(CallbackPrefix, StringComparison.Ordinal);

    /// <summary>The kinds of callback, in the order livepatch runs them.</summary>
    public static IReadOnlyList<string> CallbackKinds { get; } = ["pre_patch", "post_patch", "pre_unpatch",
        "post_unpatch"];

    /// <summary>
    /// The kind of callback <paramref name="symbol"/> is the wrapper of, or null when it is no callback.
    /// </summary>
    public static string? CallbackKind(string symbol)
    {
        if (!symbol.StartsWith(CallbackPrefix, StringComparison.Ordinal)) return null;
        var rest = symbol[CallbackPrefix.Length..];
        return CallbackKinds.FirstOrDefault(k => rest.Length > k.Length + 1
            && rest.StartsWith(k + "_", StringComparison.Ordinal));
    }

    // Sections.

    /// <summary>
    /// The table of the sites where vmlinux code (6.11 and later) holds a boot-time constant the kernel patches in
    /// once (runtime_const_ptr): <c>runtime_ptr_SYM</c> lists the movabs immediates set from the variable SYM.
    /// </summary>
    public const string RuntimePointerPrefix = "runtime_ptr_";

    /// <summary>Likewise for shifts by a runtime constant: <c>runtime_shift_SYM</c>.</summary>
    public const string RuntimeShiftPrefix = "runtime_shift_";

    /// <summary>
    /// Sections the kernel frees once boot or the module's load is over (__init, __exit, __meminit and the boot
    /// entry): code there never runs again, and a livepatch cannot use it.
    /// </summary>
    public static bool IsInitSection(string section) =>
        section.StartsWith(".init.", StringComparison.Ordinal) || section.StartsWith(".exit.", StringComparison.Ordinal)
        || section.StartsWith(".meminit.", StringComparison.Ordinal) || section == ".head.text";

    /// <summary>The static branch table: one <c>struct jump_entry</c> (code, target, key) per site.</summary>
    public const string JumpTable = "__jump_table";

    /// <summary>
    /// The size of a <c>struct jump_entry</c> on x86-64: three relative fields, the key one 8 bytes wide.
    /// </summary>
    public const int JumpEntrySize = 16;

    /// <summary>The static call site table: one <c>struct static_call_site</c> (address, key) per site.</summary>
    public const string StaticCallSites = ".static_call_sites";

    /// <summary>
    /// Sections of code fragments that each belong to one place elsewhere: alternative replacements and the feature
    /// tests of static_cpu_has.
    /// </summary>
    public static bool IsFragmentSection(string section) => section is ".altinstr_replacement" or ".altinstr_aux";

    [GeneratedRegex(@"^(.+?)\.(\d+)$")]
    private static partial Regex Numbered();
}
