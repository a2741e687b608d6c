namespace Kintsugi.Kernel.Build.Units;

/// <summary>
/// The scope phase: the translation units a set of changed files makes the builder compile. A changed C file
/// is its own unit (or the units that #include it); a changed header brings every built unit that includes it.
/// </summary>
public static class UnitSelection
{
    /// <summary>The units to compile, and the proof for each changed C file that this kernel does not build.</summary>
    public sealed record Scope(IReadOnlyList<TranslationUnit> Units, IReadOnlyList<UnitResolution.NotBuilt> NotBuilt)
    {
        /// <summary>Exit 9's message: nothing to live patch, with the proof for every file.</summary>
        public string NothingBuiltMessage => "none of the changed files is built into this kernel's configuration: " +
            "there is nothing to live patch" + string.Concat(NotBuilt.Select(n => "\n  " + n));
    }

    public static Scope Select(KernelSourceTree tree, IReadOnlyList<ScopedChange> scoped, int maxUnits, Action<string> progress)
    {
        var kbuild = KbuildUnits.Open(tree);
        var units = new SortedDictionary<string, TranslationUnit>(StringComparer.Ordinal);
        var notBuilt = new List<UnitResolution.NotBuilt>();
        HeaderDependents? headers = null;
        foreach (var change in scoped)
        {
            switch (change.Scope)
            {
                case ChangeScope.TranslationUnit:
                    if (change.Change.Kind == FileChangeKind.Added)
                        throw new LivepatchRefusedException($"{change.Change.Path} is a new C file: a livepatch " +
                            "replaces functions of units the kernel already has; put the new code into the unit that calls it");
                    switch (kbuild.Resolve(change.Change.Path))
                    {
                        case UnitResolution.Built located:
                            // A C file that is not a unit of its own may be #included into one (kernel/sched/psi.c into build_utility.c).
                            if (located.Units.Any(u => u.SourcePath != change.Change.Path))
                                progress($"{change.Change.Path} is compiled as part of " +
                                    string.Join(", ", located.Units.Select(u => u.SourcePath)));
                            foreach (var unit in located.Units) units[unit.SourcePath] = unit;
                            break;
                        case UnitResolution.NotBuilt proven:
                            progress(proven.ToString());
                            notBuilt.Add(proven);
                            break;
                        case UnitResolution.Unresolved unresolved:
                            throw new LivepatchRefusedException($"{unresolved}. A fix is never skipped on a guess: check where " +
                                "kbuild builds the file, or leave the file out of the fix if this kernel does not build it");
                    }
                    break;
                case ChangeScope.Header:
                    headers ??= HeaderDependents.Of(tree.Directory);
                    var sources = headers.SourcesIncluding(change.Change.Path)
                        .Where(s => s.EndsWith(".c", StringComparison.Ordinal)).ToList();
                    // All of them, even past --max-units: the refusal lists every unit the header is compiled into.
                    var resolved = sources.AsParallel().AsOrdered().WithDegreeOfParallelism(Environment.ProcessorCount)
                        .Select(kbuild.Resolve).ToList();
                    var built = resolved.OfType<UnitResolution.Built>().SelectMany(b => b.Units)
                        .DistinctBy(u => u.SourcePath).ToList();
                    // Too many units is the refusal that says most; below it, an includer nobody can place refuses the fix.
                    if (units.Count + built.Count <= maxUnits
                        && resolved.OfType<UnitResolution.Unresolved>().FirstOrDefault() is { } unknown)
                        throw new LivepatchRefusedException($"{change.Change.Path} is included by {unknown}. A fix is " +
                            "never skipped on a guess: check where kbuild builds that file");
                    progress($"{change.Change.Path} is included by {sources.Count} C file(s), " +
                        $"{built.Count} unit(s) of them built into this kernel");
                    foreach (var including in built) units[including.SourcePath] = including;
                    if (built.Count == 0)
                        notBuilt.Add(new UnitResolution.NotBuilt(change.Change.Path, HeaderNotBuilt(sources.Count, resolved)));
                    break;
            }
        }
        if (units.Count > maxUnits) throw TooManyUnits(units, maxUnits);
        return new Scope([.. units.Values], notBuilt);
    }

    private static LivepatchRefusedException TooManyUnits(SortedDictionary<string, TranslationUnit> units, int maxUnits) =>
        new($"the fix changes code included by {units.Count} translation units (more than {maxUnits}); rebuilding " +
            "them all is not a reasonable livepatch. Move the change out of the header into the functions that need " +
            "it, or raise --max-units. The units:\n" + string.Join('\n', units.Keys.Select(u => "  " + u)));

    private static NotBuiltProof HeaderNotBuilt(int includers, IReadOnlyList<UnitResolution> resolved) =>
        new(NotBuiltReason.IncludersNotBuilt, includers == 0
                ? "no C file of the tree #includes this header"
                : $"each of the {includers} C file(s) that #include it is proven not built",
            [.. resolved.OfType<UnitResolution.NotBuilt>().Take(20).Select(n => n.ToString())]);
}
