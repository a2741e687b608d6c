using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.Build.Units;

/// <summary>A translation unit of the target kernel: its source, its object, and the kernel object it is linked into.</summary>
/// <param name="PatchedObject"><c>vmlinux</c>, or the module's name as the kernel knows it ('-' written as '_').</param>
public sealed record TranslationUnit(string SourcePath, string ObjectPath, string PatchedObject)
{
    public bool IsVmlinux => PatchedObject == "vmlinux";
}

/// <summary>
/// Finds where kbuild links a C file, from the Makefiles and the distribution's .config: into vmlinux, into a
/// module (and which), or nowhere. Reading the Makefiles rather than building the whole tree keeps a build
/// to the units the fix touches; kbuild's grammar for object lists is small (<c>obj-y</c>, <c>obj-m</c>,
/// <c>obj-$(CONFIG_X)</c>, composite <c>name-y</c>/<c>name-objs</c>/<c>name-$(CONFIG_X)</c>, <c>dir/</c> descents).
/// </summary>
public sealed partial class KbuildUnits
{
    private readonly string _tree;
    private readonly IReadOnlyDictionary<string, string> _config;
    private readonly Dictionary<string, IReadOnlyList<Assignment>> _makefiles = new(StringComparer.Ordinal);

    private sealed record Assignment(string Target, string Condition, IReadOnlyList<string> Objects);

    private KbuildUnits(string tree, IReadOnlyDictionary<string, string> config)
    {
        _tree = tree;
        _config = config;
    }

    public static KbuildUnits Open(string tree)
    {
        var config = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines(Path.Combine(tree, ".config")))
        {
            if (!line.StartsWith("CONFIG_", StringComparison.Ordinal)) continue;
            var equals = line.IndexOf('=');
            if (equals > 0) config[line[..equals]] = line[(equals + 1)..];
        }
        return new KbuildUnits(tree, config);
    }

    /// <summary>The unit a C file compiles to, or null when the distribution's configuration does not build it.</summary>
    public TranslationUnit? Locate(string sourcePath)
    {
        if (!sourcePath.EndsWith(".c", StringComparison.Ordinal))
            throw new ModuleBuildException($"{sourcePath} is not a C file");
        var objectPath = sourcePath[..^2] + ".o";
        var directory = Path.GetDirectoryName(sourcePath) ?? "";
        var linkage = Linkage(directory, Path.GetFileName(objectPath), depth: 0);
        if (linkage is null || !DirectoryBuilt(directory, out var directoryIsModular)) return null;
        // A directory descended only for modules (obj-m += dir/) builds its obj-y objects into nothing.
        if (directoryIsModular && linkage.Value.Module is null) return null;
        return new TranslationUnit(sourcePath, objectPath, linkage.Value.Module?.Replace('-', '_') ?? "vmlinux");
    }

    /// <summary>Module is null for built-in code; the result is null when the object is not built.</summary>
    private (string? Module, bool Built)? Linkage(string directory, string objectName, int depth)
    {
        if (depth > 8) return null;
        foreach (var assignment in Assignments(directory))
        {
            if (!assignment.Objects.Contains(objectName)) continue;
            var state = Evaluate(assignment.Condition);
            if (state == 'n') continue;
            if (assignment.Target == "obj")
                return state == 'm' ? (objectName[..^2], true) : (null, true);
            // lib-y objects are linked into vmlinux when something uses them; the fidelity proof catches one that is not.
            if (assignment.Target == "lib") return (null, true);
            if (assignment.Target is "core" or "extra" or "always" or "targets" or "subdir" or "hostprogs" or "userprogs" or "ccflags" or "asflags" or "ldflags") continue;
            // A part of a composite object: the composite decides where it goes.
            var composite = Linkage(directory, assignment.Target + ".o", depth + 1);
            // Or an item of a list spliced into another as $(name-y) (mm/Makefile's mmu-y holds mm/memory.o):
            // it goes where that list goes, and a module made of a spliced list item is named after the item.
            if (composite is null && Linkage(directory, $"$({assignment.Target}-y)", depth + 1) is { } spliced)
                composite = spliced.Module is null ? spliced : (objectName[..^2], true);
            if (composite is null) continue;
            if (composite.Value.Module is null && state == 'm') continue;
            return composite;
        }
        return null;
    }

    private bool DirectoryBuilt(string directory, out bool modularOnly)
    {
        modularOnly = false;
        var current = directory;
        while (current.Contains('/'))
        {
            var parent = Path.GetDirectoryName(current)!;
            var name = Path.GetFileName(current) + "/";
            // The top Makefile descends only into the target architecture's directory (x86 for every supported kernel).
            if (parent == "arch") return name == "x86/";
            var states = Assignments(parent).Where(a => a.Target is "obj" or "subdir" && a.Objects.Contains(name)).Select(a => Evaluate(a.Condition)).ToList();
            // Descended from elsewhere (the top Makefile, arch Makefiles): built.
            if (states.Count == 0) return true;
            if (states.All(s => s == 'n')) return false;
            if (!states.Contains('y')) modularOnly = true;
            current = parent;
        }
        return true;
    }

    private char Evaluate(string condition)
    {
        if (condition is "y" or "objs" or "") return 'y';
        if (condition == "m") return 'm';
        var match = ConfigReference().Match(condition);
        if (!match.Success) return 'n';
        return _config.TryGetValue(match.Groups[1].Value, out var value) && value is "y" or "m" ? value[0] : 'n';
    }

    private IReadOnlyList<Assignment> Assignments(string directory)
    {
        if (_makefiles.TryGetValue(directory, out var cached)) return cached;
        var assignments = new List<Assignment>();
        foreach (var file in new[] { "Kbuild", "Makefile" })
        {
            var path = Path.Combine(_tree, directory, file);
            if (!File.Exists(path)) continue;
            var text = File.ReadAllText(path).Replace("\\\n", " ", StringComparison.Ordinal)
                // arch/x86 names 64-bit objects through $(BITS) (process_$(BITS).o); every supported kernel is x86-64.
                .Replace("$(BITS)", "64", StringComparison.Ordinal);
            foreach (var line in text.Split('\n'))
            {
                var match = ObjectList().Match(line);
                if (!match.Success) continue;
                var objects = match.Groups["objects"].Value.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)
                    .TakeWhile(word => !word.StartsWith('#')).ToList();
                assignments.Add(new Assignment(match.Groups["target"].Value, match.Groups["condition"].Value, objects));
            }
            break;
        }
        return _makefiles[directory] = assignments;
    }

    [GeneratedRegex(@"^\s*(?<target>[A-Za-z0-9_.-]+?)-(?<condition>y|m|objs|\$\(CONFIG_[A-Za-z0-9_]+\))\s*[:+]?=\s*(?<objects>.*)$")]
    private static partial Regex ObjectList();

    [GeneratedRegex(@"^\$\((CONFIG_[A-Za-z0-9_]+)\)$")]
    private static partial Regex ConfigReference();
}
