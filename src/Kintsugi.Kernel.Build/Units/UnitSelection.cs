namespace Kintsugi.Kernel.Build.Units;

/// <summary>
/// The scope phase: the translation units a set of changed files makes the builder compile. A changed C file
/// is its own unit (or the units that #include it); a changed header brings every built unit that includes it.
/// </summary>
public static class UnitSelection
{
    public static IReadOnlyList<TranslationUnit> Select(KernelSourceTree tree, IReadOnlyList<ScopedChange> scoped,
        int maxUnits, Action<string> progress)
    {
        var kbuild = KbuildUnits.Open(tree.Directory);
        var units = new SortedDictionary<string, TranslationUnit>(StringComparer.Ordinal);
        HeaderDependents? headers = null;
        foreach (var change in scoped)
        {
            switch (change.Scope)
            {
                case ChangeScope.TranslationUnit:
                    if (change.Change.Kind == FileChangeKind.Added)
                        throw new LivepatchRefusedException($"{change.Change.Path} is a new C file: a livepatch " +
                            "replaces functions of units the kernel already has; put the new code into the unit that calls it");
                    if (kbuild.Locate(change.Change.Path) is { } unit)
                    {
                        units[unit.SourcePath] = unit;
                        break;
                    }
                    // A C file that is not a unit of its own may be #included into one (kernel/sched/psi.c into
                    // build_utility.c).
                    headers ??= HeaderDependents.Scan(tree.Directory);
                    var includers = headers.SourcesIncluding(change.Change.Path).Select(kbuild.Locate)
                        .OfType<TranslationUnit>().ToList();
                    if (includers.Count == 0)
                        progress($"{change.Change.Path} is not built into this kernel's configuration; skipped");
                    else
                        progress($"{change.Change.Path} is compiled as part of " +
                            string.Join(", ", includers.Select(u => u.SourcePath)));
                    foreach (var including in includers) units[including.SourcePath] = including;
                    break;
                case ChangeScope.Header:
                    headers ??= HeaderDependents.Scan(tree.Directory);
                    var sources = headers.SourcesIncluding(change.Change.Path);
                    var built = sources.Select(kbuild.Locate).OfType<TranslationUnit>().ToList();
                    progress($"{change.Change.Path} is included by {sources.Count} C file(s), " +
                        $"{built.Count} of them built into this kernel");
                    foreach (var including in built) units[including.SourcePath] = including;
                    break;
            }
        }
        if (units.Count > maxUnits)
            throw new LivepatchRefusedException($"the fix changes code included by {units.Count} translation units " +
                $"(more than {maxUnits}); rebuilding them all is not a reasonable livepatch. Move the change out of " +
                "the header into the functions that need it, or raise --max-units. The units:\n" +
                string.Join('\n', units.Keys.Select(u => "  " + u)));
        return [.. units.Values];
    }
}
