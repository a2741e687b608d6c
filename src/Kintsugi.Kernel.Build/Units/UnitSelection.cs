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

    public static Scope Select(KernelSourceTree tree, IReadOnlyList<ScopedChange> scoped, int maxUnits,
        Action<string> progress)
    {
        var kbuild = KbuildUnits.Open(tree);
        var units = new SortedDictionary<string, TranslationUnit>(StringComparer.Ordinal);
        var notBuilt = new List<UnitResolution.NotBuilt>();
        foreach (var change in scoped)
        {
            switch (change.Scope)
            {
                case ChangeScope.TranslationUnit:
                    if (change.Change.Kind == FileChangeKind.Added)
                        throw new LivepatchRefusedException($"{change.Change.Path} is a new C file: a livepatch " +
                            "replaces functions of units the kernel already has; put the new code into the unit that " +
                            "calls it");
                    switch (kbuild.Resolve(change.Change.Path))
                    {
                        case UnitResolution.Built located:
                            // A C file that is not a unit of its own may be #included into one (kernel/sched/psi.c into
                            // build_utility.c).
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
                            throw new LivepatchRefusedException(
                                $"{unresolved}. A fix is never skipped on a guess: check where " +
                                "kbuild builds the file, or leave the file out of the fix if this kernel does not " +
                                "build it");
                    }
                    break;
                case ChangeScope.Header:
                    // All of them, even past --max-units: the refusal lists every unit the header is compiled into.
                    var header = kbuild.ResolveHeader(change.Change.Path, limit: maxUnits, stopAtLimit: false);
                    switch (header.Resolution)
                    {
                        case UnitResolution.Built:
                            progress($"{change.Change.Path} is included by {header.Includers} C file(s), " +
                                $"{header.Units.Count} unit(s) of them built into this kernel");
                            foreach (var including in header.Units) units[including.SourcePath] = including;
                            break;
                        case UnitResolution.NotBuilt proven:
                            progress(proven.ToString());
                            notBuilt.Add(proven);
                            break;
                        case UnitResolution.Unresolved unknown:
                            throw new LivepatchRefusedException(
                                $"{unknown}. A fix is never skipped on a guess: check which " +
                                "units of this kernel include the header");
                    }
                    break;
            }
        }
        if (units.Count > maxUnits) throw TooManyUnits(units, maxUnits);
        return new Scope([.. units.Values], notBuilt);
    }

    private static LivepatchRefusedException TooManyUnits(SortedDictionary<string, TranslationUnit> units,
        int maxUnits) =>
        new($"the fix changes code included by {units.Count} translation units (more than {maxUnits}); rebuilding " +
            "them all is not a reasonable livepatch. Move the change out of the header into the functions that need " +
            "it, or raise --max-units. The units:\n" + string.Join('\n', units.Keys.Select(u => "  " + u)));
}
