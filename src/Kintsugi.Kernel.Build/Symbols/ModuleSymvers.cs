using Kintsugi.Diff;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>One exported symbol from Module.symvers: its name, the object exporting it, and its namespace.</summary>
public sealed record ExportedSymbol(string Name, string Object, string? Namespace);

/// <summary>
/// The kernel's exported symbols (Module.symvers of the target build). A livepatch references exported
/// symbols the ordinary way, through the module loader; everything else needs a livepatch relocation.
/// </summary>
public sealed class ModuleSymvers
{
    private readonly Dictionary<string, ExportedSymbol> _byName;

    private ModuleSymvers(Dictionary<string, ExportedSymbol> byName) => _byName = byName;

    public int Count => _byName.Count;

    public ExportedSymbol? Find(string name) => _byName.GetValueOrDefault(name);

    /// <summary>Who exports what, as the binding policy reads it.</summary>
    public KernelExports Exports => _exports ??= new KernelExports(
        _byName.Values.ToDictionary(e => e.Name, e => PatchedObjectName.Parse(e.Object), StringComparer.Ordinal));

    private KernelExports? _exports;

    /// <summary>Parses <c>crc	symbol	module	export-type	namespace</c> lines; the module of vmlinux is written
    /// vmlinux.</summary>
    public static ModuleSymvers Parse(string text, string origin)
    {
        var byName = new Dictionary<string, ExportedSymbol>(StringComparer.Ordinal);
        var lineNumber = 0;
        foreach (var line in text.Split('\n'))
        {
            lineNumber++;
            if (line.Length == 0) continue;
            var fields = line.Split('\t');
            if (fields.Length < 4 || !fields[0].StartsWith("0x", StringComparison.Ordinal))
                throw new SymbolResolutionException($"{origin}:{lineNumber} is not a Module.symvers line (crc, " +
                    $"symbol, module, export type, namespace)");
            // Module names are normalized to underscores, as the kernel names loaded modules.
            var @object = fields[2] == KernelObjectNames.Vmlinux ? KernelObjectNames.Vmlinux
                : KernelObjectNames.ModuleOf(fields[2]);
            byName[fields[1]] = new ExportedSymbol(fields[1], @object,
                fields.Length > 4 && fields[4].Length > 0 ? fields[4] : null);
        }
        return new ModuleSymvers(byName);
    }

    public static ModuleSymvers Load(string path)
    {
        if (!File.Exists(path))
            throw new SymbolResolutionException($"{path} does not exist: the target's headers (or generic target " +
                $"directory) must provide Module.symvers");
        return Parse(File.ReadAllText(path), path);
    }
}
