namespace Kintsugi.Lab;

/// <summary>Resolves kernel modules by name to files in load order, from a kernel's modules.dep and
/// modules.builtin.</summary>
public sealed class KernelModuleClosure
{
    private readonly Dictionary<string, (string Path, string[] Dependencies)> _modules = new(StringComparer.Ordinal);
    private readonly HashSet<string> _builtin = new(StringComparer.Ordinal);

    public KernelModuleClosure(string modulesDirectory)
    {
        var dep = Path.Combine(modulesDirectory, "modules.dep");
        if (!File.Exists(dep))
            throw new LabException($"{dep} is missing (depmod was not run on this kernel's modules)");
        foreach (var line in File.ReadLines(dep))
        {
            var colon = line.IndexOf(':');
            if (colon <= 0) continue;
            var path = line[..colon];
            var dependencies = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            _modules[NameOf(path)] = (path, dependencies);
        }
        var builtin = Path.Combine(modulesDirectory, "modules.builtin");
        if (File.Exists(builtin)) foreach (var line in File.ReadLines(builtin)) _builtin.Add(NameOf(line));
    }

    public static string NameOf(string path) => KernelObjectNames.ModuleOf(path);

    public bool IsBuiltin(string name) => _builtin.Contains(KernelObjectNames.Normalize(name));

    /// <summary>Relative paths to load, dependencies first; built-in modules need nothing.</summary>
    public IReadOnlyList<string> Resolve(IEnumerable<string> names)
    {
        var order = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in names) Visit(KernelObjectNames.Normalize(name), order, seen);
        return order;
    }

    private void Visit(string name, List<string> order, HashSet<string> seen)
    {
        if (!seen.Add(name) || IsBuiltin(name)) return;
        if (!_modules.TryGetValue(name, out var module))
            throw new LabException($"this kernel has no module {name} (neither built in nor in modules.dep)");
        foreach (var dependency in module.Dependencies) Visit(NameOf(dependency), order, seen);
        order.Add(module.Path);
    }
}
