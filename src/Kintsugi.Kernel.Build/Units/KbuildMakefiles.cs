using System.Collections.Concurrent;
using Kintsugi.Kernel.Build.Toolchains;

namespace Kintsugi.Kernel.Build.Units;

/// <summary>
/// The object lists of a kernel tree's Makefiles as kbuild itself evaluates them, with the tree's .config:
/// GNU make reads each directory's Kbuild or Makefile the way scripts/Makefile.build does, with the
/// variables the top Makefile exports (BITS, SRCARCH, srctree ...) and include/config/auto.conf, and prints
/// every object list. Every kbuild construct (conditionals, <c>$(CONFIG_X)</c>, spliced lists such as
/// <c>$(mmu-y)</c>, <c>$(BITS)</c>, <c>$(addprefix ...)</c>, included Makefiles) is thus evaluated by make,
/// not imitated. Needs a prepared tree (make prepare writes include/config/auto.conf). make runs with the
/// tree's own toolchain: the top Makefile compares the compiler's version text with the one the tree was
/// configured with, and with another compiler it would reconfigure the tree instead of reading it.
/// </summary>
internal sealed class KbuildMakefiles
{
    private const string Marker = "kintsugi-list ";

    // Makefile.build's preamble, without the compiler probes (they only decide flags) and without the rules.
    private const string Evaluator = """
        src := $(obj)
        obj-y :=
        obj-m :=
        lib-y :=
        lib-m :=
        subdir-y :=
        subdir-m :=
        -include include/config/auto.conf
        include $(srctree)/scripts/Kbuild.include
        kintsugi-dir := $(if $(filter /%,$(src)),$(src),$(srctree)/$(src))
        include $(or $(wildcard $(kintsugi-dir)/Kbuild),$(kintsugi-dir)/Makefile)
        kintsugi-lists := $(sort $(filter-out %flags-y %flags-m %flags-objs,$(filter %-y %-m %-objs,$(.VARIABLES))))
        kintsugi-lists:
        	@:$(foreach v,$(kintsugi-lists),$(info kintsugi-list $(v) = $($(v))))

        """;

    private readonly string _tree;
    private readonly Toolchain _toolchain;
    private readonly IReadOnlyList<string> _visible;
    private readonly Lazy<(IReadOnlyList<string> Environment, IReadOnlySet<string> TopDirectories)> _top;
    private readonly ConcurrentDictionary<string, Lazy<DirectoryLists?>> _directories = new(StringComparer.Ordinal);
    private readonly Lazy<string?> _cacheDirectory;

    public KbuildMakefiles(string tree, Toolchain toolchain, IReadOnlyList<string> visible)
    {
        _tree = tree;
        _toolchain = toolchain;
        _visible = visible;
        _top = new(ReadTop);
        _cacheDirectory = new(FindCacheDirectory);
    }

    /// <summary>The directories the top Makefile descends into (paths relative to the tree, no trailing slash; "." for
    /// the top Kbuild).</summary>
    public IReadOnlySet<string> TopDirectories => _top.Value.TopDirectories;

    /// <summary>The evaluated lists of a directory's Kbuild or Makefile; null when it has neither.</summary>
    public DirectoryLists? Lists(string directory) =>
        _directories.GetOrAdd(directory, d => new Lazy<DirectoryLists?>(() => Evaluate(d))).Value;

    public static bool HasMakefile(string tree, string directory) =>
        File.Exists(Path.Combine(tree, directory, "Kbuild")) || File.Exists(Path.Combine(tree, directory, "Makefile"));

    private DirectoryLists? Evaluate(string directory)
    {
        if (!HasMakefile(_tree, directory)) return null;
        var (succeeded, output) = EvaluateCached(directory);
        if (!succeeded)
            return new DirectoryLists(directory, new Dictionary<string, IReadOnlyList<string>>(),
                $"make could not evaluate {MakefileOf(directory)}: {FirstLines(output)}");
        var lists = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
        foreach (var line in output.Split('\n'))
        {
            if (!line.StartsWith(Marker, StringComparison.Ordinal)) continue;
            var equals = line.IndexOf(" = ", StringComparison.Ordinal);
            if (equals < 0) continue;
            lists[line[Marker.Length..equals]] = line[(equals + 3)..].Split([' ', '\t'],
                StringSplitOptions.RemoveEmptyEntries);
        }
        return new DirectoryLists(directory, lists, null);
    }

    /// <summary>
    /// make's answer for one directory: stdout when it succeeded, stderr when not. A tree that kintsugi prepared
    /// (it has the prepared stamp) never changes, so each answer is kept beside it: resolving a common header's
    /// includers asks make about hundreds of directories, and a second run (or the next fix) asks none again.
    /// </summary>
    private (bool Succeeded, string Output) EvaluateCached(string directory)
    {
        var record = _cacheDirectory.Value is { } cache
            ? Path.Combine(cache, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
                System.Text.Encoding.UTF8.GetBytes(directory)))[..24])
            : null;
        if (record is not null && File.Exists(record))
        {
            var kept = File.ReadAllText(record);
            if (kept.Length > 0) return (kept[0] == '0', kept[1..]);
        }
        // The evaluator is given on the command line, so it needs no file where a build root's make could read it.
        var result = Make(["env", .. _top.Value.Environment, "make", "-s", "--no-print-directory", "-f", "/dev/null",
            "--eval=" + Evaluator.Replace("\r\n", "\n"), $"obj={(directory.Length == 0 ? "." : directory)}",
                "kintsugi-lists"]);
        var answer = (result.Succeeded, result.Succeeded ? result.StandardOutput : result.StandardError);
        if (record is not null)
        {
            var staging = $"{record}.{Environment.ProcessId}.{Environment.CurrentManagedThreadId}";
            File.WriteAllText(staging, (answer.Succeeded ? "0" : "1") + answer.Item2);
            File.Move(staging, record, overwrite: true);
        }
        return answer;
    }

    /// <summary>Where answers are kept: named by the evaluator and the preparation, so a re-prepared tree starts
    /// afresh.</summary>
    private string? FindCacheDirectory()
    {
        var stamp = Path.Combine(_tree, ".kintsugi-prepared");
        var config = Path.Combine(_tree, "include", "config", "auto.conf");
        if (!File.Exists(stamp) || !File.Exists(config)) return null;
        var key =
            Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(
            Evaluator.Replace("\r\n", "\n") + "\n" + File.ReadAllText(stamp) + "\n" + File.ReadAllText(config))))[..16];
        var directory = Path.Combine(_tree, ".kintsugi-kbuild", key);
        try
        {
            Directory.CreateDirectory(directory);
            return directory;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    public string MakefileOf(string directory) =>
        Path.Combine(directory, File.Exists(Path.Combine(_tree, directory, "Kbuild")) ? "Kbuild" : "Makefile");

    /// <summary>
    /// Runs the top Makefile once for what it exports to every directory's make (as kbuild's sub-makes
    /// inherit it) and for the directories it descends into.
    /// </summary>
    private (IReadOnlyList<string>, IReadOnlySet<string>) ReadTop()
    {
        const string Goal = "kintsugi-top: ; @echo 'kintsugi-dirs $(build-dir) $(build-dirs) $(vmlinux-dirs) " +
            "$(core-y) $(drivers-y) $(libs-y) $(core-m) $(drivers-m) $(libs-m)'; env";
        var result = Make(["make", "-s", "--no-print-directory", $"--eval={Goal}", "kintsugi-top"]);
        if (!result.Succeeded)
            throw new ModuleBuildException(
                $"make could not read the top Makefile of {_tree}: {FirstLines(result.StandardError)}");
        var environment = new List<string>();
        var directories = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in result.StandardOutput.Split('\n'))
        {
            if (line.StartsWith("kintsugi-dirs ", StringComparison.Ordinal))
            {
                foreach (var word in line["kintsugi-dirs ".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    directories.Add(word == "." ? "." : word.TrimEnd('/'));
                continue;
            }
            var equals = line.IndexOf('=');
            if (equals <= 0) continue;
            var name = line[..equals];
            // The sub-make's own bookkeeping is not what the top Makefile exports.
            if (name is "MAKEFLAGS" or "MFLAGS" or "MAKELEVEL" or "MAKEOVERRIDES" or "MAKE_TERMOUT" or "MAKE_TERMERR")
                continue;
            environment.Add(line);
        }
        return (environment, directories);
    }

    private CommandResult Make(IReadOnlyList<string> command) =>
        _toolchain.RunAsync(command[0], command.Skip(1).ToList(), _tree, _visible).GetAwaiter().GetResult();

    private static string FirstLines(string text) =>
        string.Join(" ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Take(3)).Trim();
}

/// <summary>One directory's object lists as make evaluated them; <see cref="Error"/> when make could not.</summary>
internal sealed record DirectoryLists(string Directory, IReadOnlyDictionary<string, IReadOnlyList<string>> Lists,
    string? Error)
{
    private readonly Dictionary<string, IReadOnlySet<string>> _resolved = new(StringComparer.Ordinal);

    /// <summary>A list's words as paths relative to the tree (<c>../../../virt/kvm/kvm_main.o</c> in arch/x86/kvm is
    /// virt/kvm/kvm_main.o).</summary>
    private IReadOnlySet<string> this[string name]
    {
        get
        {
            lock (_resolved)
            {
                if (_resolved.TryGetValue(name, out var set)) return set;
                return _resolved[name] = (Lists.GetValueOrDefault(name) ?? []).Select(TreePath)
                    .ToHashSet(StringComparer.Ordinal);
            }
        }
    }

    private string TreePath(string word)
    {
        var joined = Directory.Length == 0 ? word : Directory + "/" + word;
        if (!joined.Contains("..", StringComparison.Ordinal) && !joined.Contains("./", StringComparison.Ordinal))
            return joined;
        var parts = new List<string>();
        foreach (var part in joined.Split('/'))
        {
            if (part is "." or "") continue;
            if (part == ".." && parts.Count > 0) parts.RemoveAt(parts.Count - 1);
            else parts.Add(part);
        }
        return string.Join('/', parts) + (joined.EndsWith('/') ? "/" : "");
    }

    private IEnumerable<string> ObjY => this["obj-y"];

    // Makefile.lib: an object in obj-y and obj-m is built in; lib-y holds what obj-y does not.
    private IEnumerable<string> ObjM => this["obj-m"].Except(ObjY);

    private IEnumerable<string> LibY => this["lib-y"].Concat(this["lib-m"]).Except(ObjY);

    /// <summary>
    /// Where this directory's lists put <paramref name="objectPath"/> (relative to the tree): built in, into a
    /// module (its name), or null when no list links it.
    /// </summary>
    public Placement? Place(string objectPath)
    {
        var where = Directory.Length == 0 ? "the top Kbuild" : Directory + "/";
        if (ObjY.Contains(objectPath)) return new Placement(null, $"obj-y of {where}");
        if (ObjM.Contains(objectPath)) return new Placement(ModuleName(objectPath), $"obj-m of {where}");
        if (LibY.Contains(objectPath)) return new Placement(null, $"lib-y of {where}");
        // Composite objects (Makefile.lib's multi-search): parts from name-objs and name-y, and for modules name-m.
        foreach (var composite in ObjY.Where(o => o.EndsWith(".o", StringComparison.Ordinal) && o != objectPath))
        {
            var name = CompositeName(composite);
            if (this[name + "-objs"].Contains(objectPath) || this[name + "-y"].Contains(objectPath))
                return new Placement(null, $"{name}-y of {where}, built in");
        }
        foreach (var composite in ObjM.Where(o => o.EndsWith(".o", StringComparison.Ordinal) && o != objectPath))
        {
            var name = CompositeName(composite);
            if (this[name + "-objs"].Contains(objectPath) || this[name + "-y"].Contains(objectPath)
                || this[name + "-m"].Contains(objectPath))
                return new Placement(ModuleName(composite), $"{name}-y of {where}, a module");
        }
        return null;
    }

    /// <summary>The composite's variable prefix: its object path relative to this directory, without .o.</summary>
    private string CompositeName(string treePath) =>
        (Directory.Length == 0 ? treePath : treePath[(Directory.Length + 1)..])[..^2];

    /// <summary>How this directory's lists descend into <paramref name="subdirectory"/> (relative to the tree): 'y',
    /// 'm', or null.</summary>
    public char? Descends(string subdirectory)
    {
        var entry = subdirectory + "/";
        if (ObjY.Contains(entry)) return 'y';
        if (this["obj-m"].Contains(entry)) return 'm';
        return null;
    }

    /// <summary>Listed only as a subdir-y/subdir-m: descended for its own targets, linked into nothing.</summary>
    public bool DescendsWithoutLinking(string subdirectory) =>
        this["subdir-y"].Concat(this["subdir-m"]).Any(s => s.TrimEnd('/') == subdirectory);

    private static string ModuleName(string objectPath) => Path.GetFileName(objectPath)[..^2].Replace('-', '_');
}

/// <summary>Module is null for built-in code.</summary>
internal sealed record Placement(string? Module, string How);
