namespace Kintsugi.Kernel.Build;

/// <summary>
/// Objects compiled from the unpatched prepared tree with one set of flags: the same for every build against
/// this kernel, so they are kept per kernel, and a second fix to the same units compiles only the patched side.
/// </summary>
public sealed class PristineObjectCache(string directory)
{
    public string PathOf(string objectPath) => Path.Combine(directory, objectPath);

    // An object cached before its command file (with the symbol versions of its exports) was kept is compiled again once.
    public IReadOnlyList<Units.TranslationUnit> Missing(IEnumerable<Units.TranslationUnit> units) =>
        [.. units.Where(u => !File.Exists(PathOf(u.ObjectPath)) || !File.Exists(ExportedSymbolVersions.CommandFile(PathOf(u.ObjectPath))))];

    public async Task CompileAsync(BuildWorkspace workspace, IReadOnlyList<Units.TranslationUnit> units, string? extraCFlags,
        CancellationToken cancellation)
    {
        var objects = units.Select(u => u.ObjectPath).ToList();
        // Compiled beside the cache and moved in, so a build killed midway never leaves a half-written object
        // to be trusted later; one staging directory per call, since one process may run several builds at once
        // (catch-up trials).
        var staging = $"{directory}.staging-{Environment.ProcessId}-{Guid.NewGuid():N}";
        await workspace.CompileUnitsAsync(units, staging, extraCFlags, cancellation);
        foreach (var o in objects)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(PathOf(o))!);
            var commandFile = ExportedSymbolVersions.CommandFile(o);
            if (File.Exists(Path.Combine(staging, commandFile)))
                File.Move(Path.Combine(staging, commandFile), Path.Combine(directory, commandFile), overwrite: true);
            File.Move(Path.Combine(staging, o), PathOf(o), overwrite: true);
        }
        Directory.Delete(staging, recursive: true);
    }
}
