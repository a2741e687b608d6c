using Kintsugi.Kernel.Build;
using Kintsugi.Kernel.Build.Units;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>What the plan decided for one changed file before anything is compiled.</summary>
public abstract record FileDecision(ChangedFile File)
{
    /// <summary>To be built: its patch goes through the builder, which compiles the units it names.</summary>
    public sealed record Build(ChangedFile File, IReadOnlyList<string> Units) : FileDecision(File);

    /// <summary>Decided without compiling: refused, no code, not built, not kernel code, or outside the run's
    /// scope.</summary>
    public sealed record Decided(ChangedFile File, FileOutcome Outcome, string? Rule, string? Reason, string? Advice,
        string? Proof) : FileDecision(File);
}

/// <summary>One file's decision as kept on disk (<see cref="CatchUpPlan.ToRecords"/>).</summary>
public sealed record PlannedFile(string Path, FileOutcome? Outcome, string? Rule, string? Reason, string? Advice,
    string? Proof, IReadOnlyList<string>? Units);

/// <summary>The plan an earlier run made, with the key of everything it depends on.</summary>
public sealed record KeptPlan(string Key, IReadOnlyList<PlannedFile> Files);

/// <summary>
/// The plan phase: every changed file gets a decision from what can be told without compiling: its kind
/// (scope rules of the builder), headers compared construct by construct (a layout or a non-inline definition
/// refuses every changed C file that includes it), and where kbuild builds each C file in this kernel's
/// configuration. Only files with a unit to build go on to the builder.
/// </summary>
public sealed partial class CatchUpPlan
{
    public IReadOnlyList<FileDecision> Decisions { get; }

    private CatchUpPlan(IReadOnlyList<FileDecision> decisions) => Decisions = decisions;

    public static CatchUpPlan Make(SourceDifference difference, KernelSourceTree prepared, int maxUnits,
        IReadOnlyList<string> only, Action<string> progress)
    {
        // Makefiles are evaluated with the tree's own toolchain (its build root for another Debian release).
        var kbuild = KbuildUnits.Open(prepared);
        // Header decisions and C files #included by other C files both need the graph: read it first, with its
        // progress.
        var includes = kbuild.ReadIncludes(progress);
        var headerVerdicts = HeaderVerdicts(difference, prepared, progress);
        var decisions = new Dictionary<string, FileDecision>(StringComparer.Ordinal);
        // Headers first: a refused header refuses the changed C files that include it.
        var refusedHeaders = new List<(string Header, HeaderVerdict Verdict)>();
        var ordered = difference.Files.OrderBy(f => f.Path.EndsWith(".h", StringComparison.Ordinal) ? 0 : 1)
            .ThenBy(f => f.Path, StringComparer.Ordinal);
        foreach (var file in ordered)
        {
            var decision = Decide(file);
            if (decision is FileDecision.Decided { Outcome: FileOutcome.Refused, Rule: "header-layout" }
                && file.Path.EndsWith(".h", StringComparison.Ordinal))
                refusedHeaders.Add((file.Path, headerVerdicts[file.Path]));
            decisions[file.Path] = decision;
        }
        if (refusedHeaders.Count > 0)
        {
            // A C file's fix is tried against the running kernel's own headers, which is what its data and callers
            // were built with; it is refused here only when its changed lines name a definition the header changes
            // (a fix that needs the new definition in another way fails to compile, and says so). Refusing every
            // includer of a changed core header would refuse nearly every fix of a stable update.
            foreach (var (header, verdict) in refusedHeaders)
                foreach (var includer in includes.SourcesIncluding(header))
                    if (decisions.TryGetValue(includer, out var decision) && decision is FileDecision.Build
                        && NamedInChangedLines(difference, decision.File, verdict.Constructs) is { Count: > 0 } named)
                        decisions[includer] = new FileDecision.Decided(decision.File, FileOutcome.Refused,
                            "header-layout", $"its change uses {string.Join(", ", named)} of {header}, which " +
                            $"{string.Join("; ", verdict.Reasons)}",
                            "the fix depends on a changed definition the running kernel's data and callers were " +
                            "built with: reboot into the new version", null);
        }
        var plan = new CatchUpPlan([.. difference.Files.Select(f => decisions[f.Path])]);
        progress("plan: " + string.Join(", ", plan.Decisions
            .GroupBy(d => d is FileDecision.Decided decided
                ? $"{decided.Outcome}{(decided.Rule is { } rule ? $" ({rule})" : "")}" : "to build")
            .OrderByDescending(g => g.Count()).Select(g => $"{g.Count()} {g.Key}")));
        return plan;

        FileDecision Decide(ChangedFile file)
        {
            if (only.Count > 0 && !only.Any(prefix => file.Path.StartsWith(prefix, StringComparison.Ordinal)))
                return new FileDecision.Decided(file, FileOutcome.NotKernelCode, "scope",
                    "outside the --only scope of this run", "run again without --only", null);
            if (file.Path.StartsWith("arch/", StringComparison.Ordinal)
                && !file.Path.StartsWith("arch/x86/", StringComparison.Ordinal))
                return new FileDecision.Decided(file, FileOutcome.NotBuilt, null, null, null,
                    $"{file.Path.Split('/')[1]} is another architecture: an x86-64 kernel compiles nothing under " +
                    $"{string.Join('/', file.Path.Split('/')[..2])}/");
            var scoped =
                LivepatchScope.Classify(new FileChange(file.Path, null, file.Kind, file.LinesAdded, file.LinesRemoved));
            if (file.Patch is null && scoped.Scope != ChangeScope.Ignored)
                return new FileDecision.Decided(file, FileOutcome.Refused, "binary", "a binary file changed",
                    "reboot into the new version", null);
            switch (scoped.Scope)
            {
                case ChangeScope.Ignored:
                    return new FileDecision.Decided(file, FileOutcome.NotKernelCode, null, scoped.Reason, null, null);
                case ChangeScope.Header:
                    return DecideHeader(file);
                case ChangeScope.TranslationUnit when file.Kind == FileChangeKind.Added:
                    return new FileDecision.Decided(file, FileOutcome.Refused, "new-file",
                        "a new C file: a livepatch replaces functions of units the running kernel already has",
                        "reboot into the new version", null);
                case ChangeScope.TranslationUnit:
                    return DecideSource(file);
                default:
                    // A deleted C file is looked up in the old tree, the one the running kernel was built from.
                    if (file.Kind == FileChangeKind.Deleted && file.Path.EndsWith(".c", StringComparison.Ordinal)
                        && kbuild.Resolve(file.Path) is UnitResolution.NotBuilt deleted)
                        return new FileDecision.Decided(file, FileOutcome.NotBuilt, null, null, null,
                            deleted.Proof.ToString());
                    return new FileDecision.Decided(file, FileOutcome.Refused, "scope", scoped.Reason,
                        AdviceFor(file.Path), null);
            }
        }

        FileDecision DecideHeader(ChangedFile file)
        {
            var verdict = headerVerdicts[file.Path];
            switch (verdict.Impact)
            {
                case HeaderImpact.NoCode:
                    return new FileDecision.Decided(file, FileOutcome.NoCode, null, null, null,
                        "only comments and whitespace changed (compared construct by construct)");
                case HeaderImpact.DeclarationsOnly:
                    return new FileDecision.Decided(file, FileOutcome.NoCode, null, null, null,
                        "only declarations, or macros no source of the running kernel names, were added or removed, "
                        + "which compile to nothing: " + string.Join(", ", verdict.Constructs));
                case HeaderImpact.Refused:
                    return new FileDecision.Decided(file, FileOutcome.Refused, "header-layout",
                        string.Join("\n", verdict.Reasons),
                        "reboot into the new version: the running kernel's structures and callers were built with " +
                        "the old header", null);
            }
            var header = kbuild.ResolveHeader(file.Path, limit: maxUnits);
            return header.Resolution switch
            {
                UnitResolution.Built when header.Units.Count > maxUnits =>
                    new FileDecision.Decided(file, FileOutcome.Refused, "too-many-units",
                    $"changes {string.Join(", ", verdict.Constructs.Select(c => c.Name))}, compiled into more than " +
                    $"{maxUnits} " +
                    $"built units (it is #included by {header.Includers} C files)",
                    "raise --max-units to rebuild them all (slow), or reboot into the new version", null),
                UnitResolution.Built => new FileDecision.Build(file, [.. header.Units.Select(u => u.SourcePath)]),
                UnitResolution.NotBuilt notBuilt =>
                    new FileDecision.Decided(file, FileOutcome.NotBuilt, null, null, null, notBuilt.Proof.ToString()),
                UnitResolution.Unresolved unresolved => Unresolved(file, unresolved),
                var other => throw new InvalidOperationException($"unknown unit resolution {other}"),
            };
        }

        FileDecision DecideSource(ChangedFile file)
        {
            if (SourceChange.SameCode(difference.ReadOld(file), difference.ReadNew(file)))
                return new FileDecision.Decided(file, FileOutcome.NoCode, null, null, null,
                    "only comments and whitespace changed (compared construct by construct)");
            return kbuild.Resolve(file.Path) switch
            {
                UnitResolution.Built built =>
                    new FileDecision.Build(file, [.. built.Units.Select(u => u.SourcePath).Distinct()]),
                UnitResolution.NotBuilt notBuilt =>
                    new FileDecision.Decided(file, FileOutcome.NotBuilt, null, null, null, notBuilt.Proof.ToString()),
                UnitResolution.Unresolved unresolved => Unresolved(file, unresolved),
                var other => throw new InvalidOperationException($"unknown unit resolution {other}"),
            };
        }
    }

    /// <summary>The plan as kept on disk: one line per changed file, a null outcome meaning "to build".</summary>
    public IReadOnlyList<PlannedFile> ToRecords() => [.. Decisions.Select(d => d switch
    {
        FileDecision.Build build => new PlannedFile(d.File.Path, null, null, null, null, null, build.Units),
        FileDecision.Decided decided =>
            new PlannedFile(d.File.Path, decided.Outcome, decided.Rule, decided.Reason, decided.Advice,
            decided.Proof, null),
        _ => throw new InvalidOperationException($"unknown decision {d}"),
    })];

    /// <summary>A plan kept by an earlier run over the same difference; null when it does not cover exactly its
    /// files.</summary>
    public static CatchUpPlan? FromRecords(SourceDifference difference, IReadOnlyList<PlannedFile> records)
    {
        var byPath = records.ToDictionary(r => r.Path, StringComparer.Ordinal);
        if (byPath.Count != difference.Files.Count || difference.Files.Any(f => !byPath.ContainsKey(f.Path))
            || records.Any(r => r is { Outcome: null, Units: null })) return null;
        return new CatchUpPlan([.. difference.Files.Select(file => byPath[file.Path] switch
        {
            { Outcome: null, Units: { } units } => (FileDecision)new FileDecision.Build(file, units),
            var r => new FileDecision.Decided(file, r.Outcome!.Value, r.Rule, r.Reason, r.Advice, r.Proof),
        })]);
    }

    /// <summary>The changed constructs whose names appear as identifiers in the added or removed lines of the file's
    /// patch.</summary>
    private static IReadOnlyList<string> NamedInChangedLines(SourceDifference difference, ChangedFile file,
        IReadOnlyList<ChangedConstruct> constructs)
    {
        var identifiers = difference.IdentifiersOnChangedLines(file);
        // "struct example" is named by its tag.
        return [.. constructs.Select(c => c.Name).Where(name => identifiers.Contains(name.Split(' ')[^1]))
            .Distinct(StringComparer.Ordinal)];
    }

    /// <summary>"Cannot tell" is never "not built": the file is refused with the reason, so the report shows
    /// it.</summary>
    private static FileDecision Unresolved(ChangedFile file, UnitResolution.Unresolved unresolved) =>
        new FileDecision.Decided(file, FileOutcome.Refused, "unresolved-unit", unresolved.ToString(),
            "check by hand whether this kernel compiles the file; if it does, build the fix with kintsugi kernel " +
        "build, " +
            "otherwise nothing is lost", null);

    private static string AdviceFor(string path) =>
        path.EndsWith(".S", StringComparison.Ordinal) || path.EndsWith(".s", StringComparison.Ordinal)
        ? "reboot into the new version (assembly is not live patched)"
        : Path.GetFileName(path) is "Makefile" or "Kbuild"
        || Path.GetFileName(path).StartsWith("Kconfig", StringComparison.Ordinal)
            ? "review it: a build change that concerns only objects this configuration does not build loses nothing; " +
        "otherwise reboot"
        : "reboot into the new version";

    /// <summary>
    /// Every changed header compared construct by construct, with the macros they add looked up in the running
    /// kernel's sources in one pass over the tree.
    /// </summary>
    private static Dictionary<string, HeaderVerdict> HeaderVerdicts(SourceDifference difference,
        KernelSourceTree prepared, Action<string> progress)
    {
        var verdicts = difference.Files.Where(f => f.Path.EndsWith(".h", StringComparison.Ordinal)).ToDictionary(
            f => f.Path, f => SourceChange.ClassifyHeader(difference.ReadOld(f), difference.ReadNew(f)),
            StringComparer.Ordinal);
        var added = verdicts.Values.SelectMany(v => v.AddedMacros).ToHashSet(StringComparer.Ordinal);
        if (added.Count == 0) return verdicts;
        progress($"looking for the {added.Count} macro name(s) the changed headers add in the running kernel's "
            + "sources");
        var named = SourceNames.FilesNaming(prepared.Directory, added);
        return verdicts.ToDictionary(v => v.Key, v => SourceChange.WithNamedMacros(v.Value, named),
            StringComparer.Ordinal);
    }
}
