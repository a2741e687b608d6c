using System.Globalization;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>One symbol of the running kernel as kallsyms lists it: address, type letter (t, T, d, b, r, ...) and
/// name.</summary>
public readonly record struct KernelSymbol(ulong Address, char Type, string Name)
{
    public bool IsFunction => Type is 't' or 'T' or 'w' or 'W';
    public bool IsGlobal => char.IsUpper(Type);
}

/// <summary>Where a symbol table came from, recorded in the manifest beside every resolution.</summary>
public enum SymbolTableSource
{
    /// <summary>/proc/kallsyms of the exact kernel booted in the lab with nokaslr (no debug package needed).</summary>
    LabKallsyms,
    /// <summary>The kernel's own kallsyms tables, decoded from the vmlinux inside its image (no boot, no debug
    /// package); the same table /proc/kallsyms lists.</summary>
    ImageKallsyms,
    /// <summary>/proc/kallsyms of the kernel the builder runs on.</summary>
    RunningKallsyms,
    /// <summary>A System.map of a generic target.</summary>
    SystemMap,
    /// <summary>The symbol table of a module file (.ko) shipped with the kernel.</summary>
    ModuleFile,
}

/// <summary>
/// The symbols of one object of the running kernel (vmlinux or one module), in the kernel's own order,
/// which is the order livepatch counts <see cref="Sympos"/> in.
/// </summary>
public sealed class KernelSymbolTable
{
    private readonly Dictionary<string, List<int>> _byName = new(StringComparer.Ordinal);

    public string Object { get; }
    public SymbolTableSource Source { get; }
    public IReadOnlyList<KernelSymbol> Symbols { get; }

    public KernelSymbolTable(string @object, SymbolTableSource source, IReadOnlyList<KernelSymbol> symbols)
    {
        Object = @object;
        Source = source;
        Symbols = symbols;
        for (var i = 0; i < symbols.Count; i++)
        {
            if (!_byName.TryGetValue(symbols[i].Name, out var list)) _byName[symbols[i].Name] = list = [];
            list.Add(i);
        }
    }

    /// <summary>Every symbol of that name, in kernel order; the n-th (1-based) has sympos n when there are
    /// several.</summary>
    public IReadOnlyList<KernelSymbol> Named(string name) =>
        _byName.TryGetValue(name, out var list) ? list.Select(i => Symbols[i]).ToList() : [];

    public Sympos SymposOf(string name, ulong address)
    {
        var candidates = Named(name);
        if (candidates.Count == 1 && candidates[0].Address == address) return Sympos.Unique;
        for (var i = 0; i < candidates.Count; i++)
            if (candidates[i].Address == address) return Sympos.At(i + 1);
        throw new SymbolResolutionException($"{Object} has no symbol {name} at {address:x}");
    }

    /// <summary>The size of a function as the distance to the next symbol at a higher address (kallsyms has no
    /// sizes).</summary>
    public ulong ExtentOf(KernelSymbol symbol)
    {
        var index = _byName[symbol.Name].First(i => Symbols[i].Address == symbol.Address);
        for (var i = index + 1; i < Symbols.Count; i++)
            if (Symbols[i].Address > symbol.Address) return Symbols[i].Address - symbol.Address;
        return 0;
    }

    /// <summary>The table as /proc/kallsyms prints it (<c>address type name</c>, one a line), which
    /// <see cref="ParseKallsyms"/> reads back.</summary>
    public async Task WriteKallsymsAsync(TextWriter writer, CancellationToken cancellation = default)
    {
        foreach (var symbol in Symbols)
            await writer.WriteAsync(string.Create(CultureInfo.InvariantCulture,
                $"{symbol.Address:x16} {symbol.Type} {symbol.Name}\n").AsMemory(), cancellation);
    }

    /// <summary>
    /// Reads kallsyms or System.map text (<c>address type name [module]</c>). Symbols of modules, which
    /// kallsyms marks with [module], are left out: modules are read from their own files.
    /// </summary>
    public static KernelSymbolTable ParseKallsyms(string text, SymbolTableSource source)
    {
        var symbols = new List<KernelSymbol>(200_000);
        var lineNumber = 0;
        foreach (var rawLine in text.AsSpan().EnumerateLines())
        {
            lineNumber++;
            var line = rawLine.Trim();
            if (line.IsEmpty) continue;
            var parts = line.ToString().Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length < 3 || parts[1].Length != 1
                || !ulong.TryParse(parts[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var address))
                throw new SymbolResolutionException(
                    $"line {lineNumber} of the symbol table is not 'address type name': {line.ToString()}");
            if (parts.Length > 3 && parts[3].StartsWith('[')) continue;
            symbols.Add(new KernelSymbol(address, parts[1][0], parts[2]));
        }
        if (symbols.Count == 0) throw new SymbolResolutionException("the symbol table is empty");
        if (symbols.All(s => s.Address == 0))
            throw new SymbolResolutionException("every address in the symbol table is zero: it was read without " +
                "privileges (kptr_restrict); read it as root");
        return new KernelSymbolTable(KernelObjectNames.Vmlinux, source, symbols);
    }
}

public sealed class SymbolResolutionException(string message, Exception? inner = null)
    : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.InputRefused;
}
