using Kintsugi.Elf;

namespace Kintsugi.Diff;

/// <summary>
/// The kernel object a translation unit is linked into: <c>vmlinux</c> or a module (named as the kernel names it, '_'
/// for '-').
/// </summary>
public readonly record struct PatchedObjectName
{
    private PatchedObjectName(string value) => Value = value;

    public string Value { get; }
    public bool IsVmlinux => Value == KernelObjectNames.Vmlinux;

    public static PatchedObjectName Vmlinux { get; } = new(KernelObjectNames.Vmlinux);

    public static PatchedObjectName Parse(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 55
            || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
            throw new ArgumentException($"'{name}' is neither vmlinux nor a module name", nameof(name));
        return new PatchedObjectName(KernelObjectNames.Normalize(name));
    }

    public override string ToString() => Value;
}

/// <param name="SymbolTag">A C-identifier prefix unique per translation unit of one build; names the output's global
/// symbols.</param>
public sealed record DiffOptions(PatchedObjectName Object, string SymbolTag)
{
    /// <summary>
    /// Who exports what (Module.symvers), for the keys of the static branches and static calls the output keeps
    /// (<see cref="BindingPolicy.ForKey"/>). None (the default) treats every key a module unit does not define as the
    /// module's.
    /// </summary>
    public KernelExports Exports { get; init; } = KernelExports.None;

    /// <summary>
    /// objtool runs over the linked livepatch module (kernels with IBT or clang LTO) rather than over each unit: the
    /// output leaves out the tables objtool writes and names static call keys for it to find.
    /// </summary>
    public bool ObjtoolAtModuleLink { get; init; }

    /// <summary>Receives every decision the differ makes, in order (<c>kintsugi kernel diff --trace</c>).</summary>
    public Action<DiffDecision>? Trace { get; init; }

    /// <summary>
    /// Functions that take their caller's __LINE__ in a register: a function whose only difference is the line
    /// number it passes to one of them (a moved line) is unchanged. The kernel's by default
    /// (<see cref="KernelNames.LineFunctions"/>).
    /// </summary>
    public IReadOnlySet<string> LineFunctions { get; init; } = KernelNames.LineFunctions;
}

/// <summary>The steps of a diff, in the order they run.</summary>
public enum DiffStep { Correlate, Compare, Include, Refuse, Bind }

/// <summary>One decision of the differ and its reason: what the patch author reads to learn why.</summary>
public sealed record DiffDecision(DiffStep Step, string Symbol, string Reason)
{
    public override string ToString() => $"{Step.ToString().ToLowerInvariant(),-9} {Symbol}: {Reason}";
}

public enum FunctionChange { Unchanged, Changed, New, Removed }

/// <param name="Name">The symbol's name in the objects (clones keep their suffix; a .cold part belongs to its parent
/// and is not listed).</param>
/// <param name="OutputSymbol">For a changed function, the global symbol in the output holding the new code.</param>
/// <param name="Note">Why, where it matters (for example: only __LINE__ values changed).</param>
public sealed record FunctionDiff(string Name, FunctionChange Kind, bool IsLocal, string? OutputSymbol, string? Note);

public enum DataChange { Changed, New }

public sealed record DataDiff(string Name, DataChange Kind, bool IsLocal);

public enum RefusalRule
{
    /// <summary>Existing data changed (initial value, size or section).</summary>
    DataChanged,
    /// <summary>__init or __exit code changed, or included code references it.</summary>
    InitCodeChanged,
    /// <summary>A changed function has no ftrace entry call, so livepatch cannot redirect it.</summary>
    NoFtraceEntry,
    /// <summary>Included code references a section the engine does not know.</summary>
    UnsupportedSection,
    /// <summary>A kernel special-section entry the kernel cannot apply from a livepatch module.</summary>
    SpecialSectionUnsupported,
    /// <summary>Reserved: a removal that cannot be expressed.</summary>
    FunctionRemovedInUse,
    /// <summary>
    /// An exported symbol's version (modversions CRC) changed: the fix changes a type of an exported interface.
    /// </summary>
    ExportedInterfaceChanged,
    Other,
}

/// <param name="Message">What is wrong and what the patch author can do instead.</param>
public sealed record DiffRefusal(RefusalRule Rule, string Symbol, string Message);

public enum ReferenceTargetKind { Function, Object, Section, Other }

/// <summary>A place in the output that refers to a load-time reference.</summary>
public sealed record ReferenceSite(string Section, ulong Offset, uint Type, long Addend);

/// <summary>
/// A symbol the included code refers to that the output does not define: it must be found in the running
/// kernel. <see cref="OutputName"/> is the undefined symbol in the output: the symbol's own name for a
/// global, <c>SymbolTag + "local_" + sanitized name</c> for a local of the unit, so that two units' statics
/// never collide; <see cref="TargetName"/> is the name to look up in the running kernel.
/// </summary>
/// <param name="DefinedInUnit">The original object defines it (so sympos can be resolved from the unit's
/// layout).</param>
public sealed record LoadTimeReference(string OutputName, string TargetName, bool IsLocal, bool DefinedInUnit,
    ReferenceTargetKind Kind, IReadOnlyList<ReferenceSite> Sites);

/// <summary>
/// A static branch or static call site of included code that the output keeps in its compiled, disabled state:
/// its key lives in a module and is bound too late for the kernel to set the site up (a tracepoint).
/// </summary>
/// <param name="Function">The function holding the site (a cold part's parent).</param>
/// <param name="Key">The key's symbol (<c>__tracepoint_NAME</c>, <c>__SCK__tp_func_NAME</c>).</param>
public sealed record InertSite(string Function, string Key, KeyUse Use, string Reason);

/// <summary>What changed between two compilations of one translation unit, and the livepatch object for it.</summary>
public sealed class DiffResult
{
    internal DiffResult(IReadOnlyList<FunctionDiff> functions, IReadOnlyList<DataDiff> data,
        IReadOnlyList<DiffRefusal> refusals,
        bool hasChanges, ElfObject? output, IReadOnlyList<LoadTimeReference> references,
            IReadOnlyList<string> callbacks,
        IReadOnlyList<InertSite>? inertSites = null)
    {
        InertSites = inertSites ?? [];
        Functions = functions;
        Data = data;
        Refusals = refusals;
        HasChanges = hasChanges;
        Output = output;
        References = references;
        Callbacks = callbacks;
    }

    /// <summary>Every function of either object, sorted by name.</summary>
    public IReadOnlyList<FunctionDiff> Functions { get; }
    /// <summary>Existing data that changed, and new data.</summary>
    public IReadOnlyList<DataDiff> Data { get; }
    public IReadOnlyList<DiffRefusal> Refusals { get; }
    public bool IsRefused => Refusals.Count > 0;
    /// <summary>Whether any function changed or was added (a change of __LINE__ values only does not count).</summary>
    public bool HasChanges { get; }
    /// <summary>
    /// The relocatable object with only what the patch needs; null when refused or when nothing changed.
    /// </summary>
    public ElfObject? Output { get; }
    public IReadOnlyList<LoadTimeReference> References { get; }
    /// <summary>
    /// Output symbols named <c>__kintsugi_callback_{pre_patch|post_patch|pre_unpatch|post_unpatch}_FN</c>.
    /// </summary>
    public IReadOnlyList<string> Callbacks { get; }
    /// <summary>
    /// Sites of included code kept disabled (tracepoints whose keys live in a module), sorted by function.
    /// </summary>
    public IReadOnlyList<InertSite> InertSites { get; }
}

/// <summary>The differ cannot read its inputs as two compilations of one unit.</summary>
public sealed class DiffException(string message, Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.InputRefused;
}
