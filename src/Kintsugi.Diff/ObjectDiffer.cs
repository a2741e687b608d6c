using System.Text.RegularExpressions;
using Kintsugi.Elf;

namespace Kintsugi.Diff;

/// <summary>
/// Decides what a fix changed in one translation unit and builds the livepatch object for it: the new code
/// of every changed function, the new functions and data they need, their entries in the kernel's special
/// sections, and every reference into the running kernel, to be bound at load time.
/// </summary>
public static partial class ObjectDiffer
{
    /// <summary>
    /// Compares two compilations of one unit (same flags plus <c>-ffunction-sections -fdata-sections</c>).
    /// A fix the kernel cannot live patch is not an exception: it comes back as <see cref="DiffResult.Refusals"/>.
    /// </summary>
    /// <exception cref="DiffException">The objects are not two such compilations, or are malformed.</exception>
    public static DiffResult Diff(ElfObject original, ElfObject patched, DiffOptions options)
    {
        ArgumentNullException.ThrowIfNull(original);
        ArgumentNullException.ThrowIfNull(patched);
        ArgumentNullException.ThrowIfNull(options);
        if (!CIdentifier().IsMatch(options.SymbolTag))
            throw new ArgumentException($"the symbol tag '{options.SymbolTag}' is not a C identifier prefix",
                nameof(options));
        // Malformed input is refused where it is detected (DiffException, ElfFormatException); any other
        // exception is a bug of the differ and surfaces as one, never as a refusal of the user's objects.
        try
        {
            var result = new Differ(new ObjectView(original, patched: false), new ObjectView(patched, patched: true),
                options).Run();
            if (options.Trace is { } traceResult) TraceOutcome(result, traceResult);
            return result;
        }
        catch (ElfFormatException e)
        {
            throw new DiffException($"the objects cannot be compared as two compilations of one unit: {e.Message}", e);
        }
    }

    /// <summary>The refusals and the references left for load time, as decisions of the trace.</summary>
    private static void TraceOutcome(DiffResult result, Action<DiffDecision> trace)
    {
        foreach (var refusal in result.Refusals)
            trace(new DiffDecision(DiffStep.Refuse, refusal.Symbol, $"{refusal.Rule}: {refusal.Message}"));
        foreach (var reference in result.References)
            trace(new DiffDecision(DiffStep.Bind, reference.OutputName, (reference.DefinedInUnit
                    ? $"{(reference.IsLocal ? "local" : "global")} {reference.TargetName} of the running unit"
                    : $"{reference.TargetName}, defined outside the unit") +
                $": left undefined for the loader or livepatch to bind ({reference.Sites.Count} site(s))"));
    }

    /// <summary>A symbol name as a C identifier fragment.</summary>
    internal static string Sanitize(string name) => NonIdentifier().Replace(name, "_");

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex CIdentifier();

    [GeneratedRegex("[^A-Za-z0-9_]")]
    private static partial Regex NonIdentifier();
}

/// <summary>One diff, as its phases: correlate, compare, include, emit.</summary>
internal sealed class Differ(ObjectView original, ObjectView patched, DiffOptions options)
{
    private readonly FunctionComparer _comparer = new(original, patched, options.LineFunctions);
    private readonly List<DiffRefusal> _refusals = [];
    private readonly Dictionary<SymbolKey, FunctionChange> _functionChanges = [];

    public DiffResult Run()
    {
        Correlate();

        var functions = CompareFunctions();
        var data = CompareData();
        var hasChanges = functions.Any(f => f.Kind == FunctionChange.Changed);

        // Included: every changed function, and every new global one (a callback, or code another unit calls).
        var roots = patched.ByKey.Values.Where(d => d.Role == SymbolRole.Function && (
                _functionChanges.GetValueOrDefault(d.Key) == FunctionChange.Changed
                || (_functionChanges.GetValueOrDefault(d.Key) == FunctionChange.New && !d.IsLocal
                    && !KernelNames.IsInitSection(d.Section.Name))))
            .ToList();
        var newIncluded = roots.Any(r => _functionChanges[r.Key] == FunctionChange.New);
        if (_refusals.Count > 0 || (!hasChanges && !newIncluded))
            return new DiffResult(functions, data, _refusals, hasChanges, null, [], []);
        var builder = new OutputBuilder(patched, options, _functionChanges, _refusals);
        foreach (var root in roots) builder.Include(root);
        builder.Complete();

        if (_refusals.Count > 0)
            return new DiffResult(functions, data, _refusals, hasChanges, null, [], []);
        var callbacks = roots.Where(r => KernelNames.IsCallback(r.Name)).Select(r => r.Name)
            .Order(StringComparer.Ordinal).ToList();
        return new DiffResult(functions, data, _refusals, hasChanges || newIncluded, builder.Output, builder.References,
            callbacks, builder.InertSites);
    }

    /// <summary>Links every symbol with its twin, once; those linked by their users rather than their keys are
    /// traced.</summary>
    private void Correlate()
    {
        var byUsers = Correlation.Link(original, patched);
        if (options.Trace is not { } trace) return;
        foreach (var (o, p) in byUsers)
            trace(new DiffDecision(DiffStep.Correlate, p.Name,
                $"is {o.Name} of the original: the only static of that base name whose users overlap"));
    }

    private List<FunctionDiff> CompareFunctions()
    {
        var result = new List<FunctionDiff>();
        var pairs = original.ByKey.Values.Where(d => d.Role == SymbolRole.Function)
            .Select(b => (Before: (DefinedSymbol?)b, After: b.Twin is { Role: SymbolRole.Function } a ? a : null))
            .Concat(patched.ByKey.Values.Where(d => d.Role == SymbolRole.Function
                && d.Twin is not { Role: SymbolRole.Function })
                .Select(a => (Before: (DefinedSymbol?)null, After: (DefinedSymbol?)a)))
            .OrderBy(pair => (pair.Before ?? pair.After)!.Key.Name, StringComparer.Ordinal);
        foreach (var (before, after) in pairs)
        {
            var key = (before ?? after)!.Key;
            FunctionDiff diff;
            if (before is null)
                diff = new FunctionDiff(after!.Name, FunctionChange.New, after.IsLocal, null,
                    KernelNames.IsInitSection(after.Section.Name) ? "__init code: it never runs in a live patch"
                        : null);
            else if (after is null)
                diff = new FunctionDiff(before.Name, FunctionChange.Removed, before.IsLocal, null, null);
            else
            {
                var verdict = FunctionComparer.Combine(_comparer.CompareCode(before, after), ColdPartsVerdict(key));
                diff = verdict switch
                {
                    FunctionComparer.Verdict.Same =>
                        new FunctionDiff(after.Name, FunctionChange.Unchanged, after.IsLocal, null, null),
                    FunctionComparer.Verdict.LineNumbersOnly =>
                        new FunctionDiff(after.Name, FunctionChange.Unchanged, after.IsLocal, null,
                        "only __LINE__ values passed to a warning or debug helper changed; nothing to patch"),
                    _ =>
                        new FunctionDiff(after.Name, FunctionChange.Changed, after.IsLocal, options.SymbolTag
                        + ObjectDiffer.Sanitize(after.Name), null),
                };
                if (diff.Kind == FunctionChange.Changed) RefuseUnpatchable(after);
            }
            _functionChanges[key] = diff.Kind;
            result.Add(diff);
            Trace(before, after, diff);
        }
        return result;
    }

    private void Trace(DefinedSymbol? before, DefinedSymbol? after, FunctionDiff diff)
    {
        if (options.Trace is not { } trace) return;
        if (before is not null && after is not null && before.Name != after.Name)
            trace(new DiffDecision(DiffStep.Correlate, after.Name,
                $"is {before.Name} of the original (key {after.Key})"));
        var reason = diff.Kind switch
        {
            FunctionChange.New => "new: the original has no such function",
            FunctionChange.Removed => "removed: the patched unit no longer has it",
            FunctionChange.Changed => $"changed: its code or its parts differ; replaced by {diff.OutputSymbol}",
            _ => "unchanged",
        };
        trace(new DiffDecision(DiffStep.Compare, diff.Name, diff.Note is null ? reason : $"{reason} ({diff.Note})"));
    }

    /// <summary>A function's .cold parts, compared like it: a moved __LINE__ in a cold part is no more a change than in
    /// the hot one.</summary>
    private FunctionComparer.Verdict ColdPartsVerdict(SymbolKey parentKey)
    {
        var before = original.ColdParts[parentKey].ToList();
        var after = patched.ColdParts[parentKey].ToList();
        if (before.Count != after.Count) return FunctionComparer.Verdict.Different;
        return before.Zip(after).Select(pair => _comparer.CompareCode(pair.First, pair.Second))
            .Aggregate(FunctionComparer.Verdict.Same, FunctionComparer.Combine);
    }

    private void RefuseUnpatchable(DefinedSymbol function)
    {
        if (KernelNames.IsInitSection(function.Section.Name))
        {
            _refusals.Add(new DiffRefusal(RefusalRule.InitCodeChanged, function.Name,
                $"{function.Name} is __init or __exit code ({function.Section.Name}): it ran at boot or module load " +
                "and is gone; a livepatch cannot rerun it. If the fix must affect state that code set up, change " +
                "that state from a post-patch callback (KPATCH_POST_PATCH_CALLBACK)."));
            return;
        }
        var hasEntry = patched.RelocationsIn(function)
            .Any(r => r.Symbol?.Name == KernelNames.FtraceEntry
            && r.Offset - function.Start <= KernelNames.FtraceEntryReach);
        if (!hasEntry)
            _refusals.Add(new DiffRefusal(RefusalRule.NoFtraceEntry, function.Name,
                $"{function.Name} has no ftrace entry (notrace, noinstr, or an inline-only helper), so livepatch " +
                "cannot redirect calls to it. Patch its callers instead: move the change into a function they call " +
                "that can be traced, or change the callers themselves."));
    }

    private List<DataDiff> CompareData()
    {
        var result = new List<DataDiff>();
        foreach (var after in patched.ByKey.Values.Where(d => d.Role == SymbolRole.Data)
            .OrderBy(d => d.Name, StringComparer.Ordinal))
        {
            if (after.Twin is not { Role: SymbolRole.Data } before)
            {
                result.Add(new DataDiff(after.Name, DataChange.New, after.IsLocal));
                continue;
            }
            if (_comparer.SameData(before, after)) continue;
            result.Add(new DataDiff(after.Name, DataChange.Changed, after.IsLocal));
            options.Trace?.Invoke(new DiffDecision(DiffStep.Compare, after.Name,
                "changed data: initial value, size or place"));
            if (SpecialSections.IsIgnored(after.Section)) continue;
            _refusals.Add(new DiffRefusal(RefusalRule.DataChanged, after.Name,
                $"the fix changes the existing data {after.Name} ({after.Section.Name}: its initial value, size or " +
                "place). The running kernel keeps using the old one; a livepatch cannot change data in place. Keep " +
                "the old definition and attach new state with a shadow variable (klp_shadow_get_or_alloc), or set " +
                "the new value from a post-patch callback."));
        }
        return result;
    }
}
