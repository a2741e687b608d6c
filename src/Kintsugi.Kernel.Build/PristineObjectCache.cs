namespace Kintsugi.Kernel.Build;

/// <summary>
/// Objects compiled from the unpatched prepared tree with one set of flags: the same for every build against
/// this kernel, so they are kept per kernel, and a second fix to the same units compiles only the patched side.
/// </summary>
public sealed class PristineObjectCache(string directory)
{
    public string PathOf(string objectPath) => Path.Combine(directory, objectPath);

    // An object cached before its command file (with the symbol versions of its exports) was kept is compiled again
    // once.
    public IReadOnlyList<Units.TranslationUnit> Missing(IEnumerable<Units.TranslationUnit> units) =>
        [.. units.Where(u => !Holds(directory, u))];

    /// <summary>Whether <paramref name="directory"/> holds every unit's object with its command file.</summary>
    public static bool HoldsAll(string directory, IEnumerable<Units.TranslationUnit> units) =>
        units.All(u => Holds(directory, u));

    /// <summary>Copies one unit's object and its command file from one directory of objects to another.</summary>
    public static void CopyUnit(string from, string to, string objectPath) =>
        Transfer(from, to, objectPath, (source, destination) => File.Copy(source, destination, overwrite: true));

    /// <summary>Moves one unit's object and its command file from one directory of objects to another.</summary>
    public static void MoveUnit(string from, string to, string objectPath) =>
        Transfer(from, to, objectPath, (source, destination) => File.Move(source, destination, overwrite: true));

    // kbuild's command file (the symbol versions of the object's exports) goes first and the object last, so that a
    // run killed midway never leaves an object without it; a unit compiled without a command file has only the object.
    private static void Transfer(string from, string to, string objectPath, Action<string, string> transfer)
    {
        foreach (var path in new[] { ExportedSymbolVersions.CommandFile(objectPath), objectPath })
        {
            if (path != objectPath && !File.Exists(Path.Combine(from, path))) continue;
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(to, path))!);
            transfer(Path.Combine(from, path), Path.Combine(to, path));
        }
    }

    private static bool Holds(string directory, Units.TranslationUnit unit) =>
        File.Exists(Path.Combine(directory, unit.ObjectPath))
        && File.Exists(ExportedSymbolVersions.CommandFile(Path.Combine(directory, unit.ObjectPath)));

    /// <summary>
    /// Compiles the units into the cache. With <paramref name="keepGoing"/> the units that compile are kept and those
    /// that do not are returned; without it, any failure throws.
    /// </summary>
    public async Task<IReadOnlyList<Units.TranslationUnit>> CompileAsync(BuildWorkspace workspace,
        IReadOnlyList<Units.TranslationUnit> units,
        string? extraCFlags, CancellationToken cancellation, bool keepGoing = false, Action<int>? onCompiled = null)
    {
        // Compiled beside the cache and moved in, so a build killed midway never leaves a half-written object
        // to be trusted later; one staging directory per call, since one process may run several builds at once
        // (catch-up trials).
        var staging = $"{directory}.staging-{Environment.ProcessId}-{Guid.NewGuid():N}";
        IReadOnlyList<Units.TranslationUnit> failed = [];
        if (keepGoing)
            failed = [.. (await workspace.CompileUnitsKeepGoingAsync(units, staging, extraCFlags, cancellation,
                onCompiled)).Select(f => f.Unit)];
        else await workspace.CompileUnitsAsync(units, staging, extraCFlags, cancellation);
        foreach (var unit in units.Except(failed)) MoveUnit(staging, directory, unit.ObjectPath);
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        return failed;
    }
}
