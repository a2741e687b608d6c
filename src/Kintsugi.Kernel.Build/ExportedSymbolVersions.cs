using Kintsugi.Diff;

namespace Kintsugi.Kernel.Build;

/// <summary>
/// The symbol versions (modversions CRCs) of the symbols a unit exports, as kbuild's genksyms computed
/// them while compiling it: they are written into the object's .cmd file (<c>#SYMVER name 0xcrc</c>).
/// A CRC is a digest of the types an exported symbol's interface uses, as the unit sees them. A fix
/// that changes one changed those types (or made more of their definitions visible): every module built
/// against the running kernel expects the old version, and a livepatch cannot change an interface that
/// other code was compiled against. kpatch refuses such a fix for the same reason.
/// </summary>
public static class ExportedSymbolVersions
{
    /// <summary>kbuild's command file beside an object: dir/.name.o.cmd.</summary>
    public static string CommandFile(string objectPath) =>
        Path.Combine(Path.GetDirectoryName(objectPath) ?? "", "." + Path.GetFileName(objectPath) + ".cmd");

    public static IReadOnlyDictionary<string, string> Read(string commandFile)
    {
        var versions = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!File.Exists(commandFile)) return versions;
        foreach (var line in File.ReadLines(commandFile))
        {
            if (!line.StartsWith("#SYMVER ", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length >= 3) versions[parts[1]] = parts[2];
        }
        return versions;
    }

    /// <summary>Refuses the fix when an exported symbol of a unit has another version after it than before.</summary>
    public static void Check(IReadOnlyList<Phases.CompiledUnit> units)
    {
        var changes = new List<string>();
        foreach (var unit in units)
        {
            var before = Read(CommandFile(unit.Before));
            var after = Read(CommandFile(unit.After));
            foreach (var (symbol, version) in before)
                if (after.TryGetValue(symbol, out var changed) && changed != version)
                    changes.Add($"  {unit.Unit.SourcePath}: {symbol}: {version} -> {changed}");
        }
        if (changes.Count == 0) return;
        throw new LivepatchRefusedException(
            "the fix changes the symbol versions (modversions CRCs) of exported symbols: it changes types of their " +
            "interfaces as the " +
            "compiler sees them (a definition changed, or a new #include made one visible), which code built against " +
            "the running kernel " +
            "depends on and a livepatch cannot change:\n" + string.Join('\n', changes) +
            "\nKeep the types of exported interfaces as they are: move the new #include or type change into the " +
            "functions' own unit " +
            "without changing what the exported symbols' types look like, or ship the change in a kernel update.",
            [RefusalRule.ExportedInterfaceChanged]);
    }
}
