using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Kintsugi.User.Build;

/// <summary>
/// How the package's own build compiles one unit: the compiler's arguments (the compiler first, the unit named as the
/// build names it, <c>-o</c> and dependency-file options left out) and where it runs, relative to the source tree.
/// </summary>
/// <param name="Output">The object the build makes from it (its make or ninja target), when the command names
/// one.</param>
/// <param name="Tool">What runs the build in <paramref name="Directory"/>'s build directory: it makes
/// <paramref name="Output"/> when the unit needs what the build generates.</param>
public sealed record UnitCommand(string Directory, IReadOnlyList<string> Arguments, string? Output = null,
    BuildTool Tool = BuildTool.Make)
{
    public override string ToString() => $"(in {Directory}) {string.Join(' ', Arguments)}";
}

/// <summary>What runs a configured build: make (autotools, plain makefiles, CMake's default makefiles) or ninja (meson,
/// CMake with its Ninja generator).</summary>
public enum BuildTool { Make, Ninja }

/// <summary>
/// A source tree configured as the package's build configures it, and how that build compiles each of its units.
/// Several commands may compile one unit (a static and a shared build, a library and a program): the builder tries them
/// in order and the fidelity proof tells which one made the shipped object.
/// </summary>
public sealed class ConfiguredSource(string tree, IReadOnlyList<UnitCommand> commands)
{
    public string Tree { get; } = tree;

    public IReadOnlyList<UnitCommand> Commands { get; } = commands;

    /// <summary>
    /// Makes what the build makes before it compiles the unit, by the build's own rule for the unit's object (run once
    /// in the configured tree): the headers a build generates for some units only (OpenSSL's buildinf.h, for one; with
    /// ninja, every header meson or CMake generates is an order-only input of the objects that need it).
    /// </summary>
    public async Task MakePrerequisitesAsync(UnitCommand command, Action<string>? progress,
        CancellationToken cancellation = default)
    {
        if (command.Output is null) return;
        var directory = Path.GetFullPath(Path.Combine(Tree, command.Directory));
        using (await FileLock.AcquireAsync(Path.Combine(Path.GetDirectoryName(Tree)!, ".configure.lock"),
            cancellation))
        {
            if (File.Exists(Path.Combine(directory, command.Output))) return;
            progress?.Invoke($"making {command.Output} in {command.Directory} as the package's build does (once): " +
                "it generates what the unit needs");
            var tool = command.Tool == BuildTool.Ninja ? "ninja" : "make";
            var made = await ExternalCommand.RunAsync(tool, [command.Output], directory, cancellation: cancellation);
            if (!made.Succeeded) progress?.Invoke($"{tool} {command.Output} failed: " +
                $"{string.Join('\n', made.StandardError.Trim().Split('\n').TakeLast(5))}");
        }
    }

    /// <summary>The commands that compile <paramref name="unit"/> (a path relative to the tree) into machine code,
    /// most likely first. LLVM bitcode for a JIT (PostgreSQL's <c>-emit-llvm</c> .bc files) is not what the object
    /// runs.</summary>
    public IReadOnlyList<UnitCommand> CommandsFor(string unit)
    {
        var wanted = Path.GetFullPath(Path.Combine(Tree, unit));
        return Commands.Where(c => !c.Arguments.Contains("-emit-llvm") && c.Arguments.Any(a =>
                a.EndsWith(Path.GetFileName(unit), StringComparison.Ordinal)
                && Path.GetFullPath(Path.Combine(Tree, c.Directory, a)) == wanted))
            .DistinctBy(c => (c.Directory, string.Join('\0', c.Arguments))).ToList();
    }
}

/// <summary>
/// Configures a Debian source tree as its package build does, once per tree (the configured tree is the cached
/// "before" every later fix to the package compiles against), in named phases: <b>check</b> the build dependencies
/// (dpkg-checkbuilddeps), <b>configure</b> (the package's own dh sequence up to and including dh_auto_configure, run
/// under its debian/rules with the build flags dh gives override targets), <b>generate</b> the headers the build
/// generates before compiling (the known generated-header targets: OpenSSL's <c>build_generated</c>, PostgreSQL's
/// <c>generated-headers</c>), and <b>plan</b>: the build's compile commands, read from a dry run of <c>make all</c> in
/// each configured make build directory, or from ninja's compilation database (<c>ninja -t compdb</c>) in each ninja
/// build directory (meson's, CMake's with Ninja); nothing is compiled. A configuration that fails leaves no tree
/// behind: the next attempt unpacks afresh.
/// </summary>
public sealed class SourceConfigurator(Action<string>? progress = null)
{
    private const string Stamp = ".configured";
    private const string CommandsFile = "compile-commands.json";

    /// <summary>Make targets that produce the headers a package's build generates before it compiles anything, per
    /// directory relative to a build directory.</summary>
    private static readonly IReadOnlyList<(string Directory, string Target)> GeneratedHeaderTargets =
        [(".", "build_generated"), ("src/backend", "generated-headers")];

    public async Task<ConfiguredSource> ConfigureAsync(PreparedSource source, bool installBuildDependencies = false,
        CancellationToken cancellation = default)
    {
        var entry = Path.GetDirectoryName(source.Tree)!;
        using (await FileLock.AcquireAsync(Path.Combine(entry, ".configure.lock"), cancellation))
        {
            var commandsPath = Path.Combine(entry, CommandsFile);
            if (File.Exists(Path.Combine(entry, Stamp)))
                return new ConfiguredSource(source.Tree, JsonSerializer.Deserialize(
                    await File.ReadAllTextAsync(commandsPath, cancellation), UserBuildJson.Default.ListUnitCommand)!);
            await CheckBuildDependenciesAsync(source, installBuildDependencies, cancellation);
            try
            {
                var before = CandidateDirectories(source.Tree);
                await ConfigureTreeAsync(source, cancellation);
                var buildDirectories = BuildDirectories(source.Tree, before);
                if (buildDirectories.Count == 0) throw new UserBuildException($"configuring {source.Package} made no " +
                    $"makefile and no build.ninja in {source.Tree} (nor in a directory the configure step created): " +
                    "its build is neither make- nor ninja-based; give --source with a configured tree and --cflags",
                    ExitCode.InputRefused);
                var commands = new List<UnitCommand>();
                foreach (var (directory, tool) in buildDirectories)
                {
                    if (tool == BuildTool.Make) await GenerateHeadersAsync(directory, cancellation);
                    commands.AddRange(tool == BuildTool.Ninja ? await PlanNinjaAsync(source.Tree, directory,
                        cancellation) : await PlanAsync(source.Tree, directory, cancellation));
                }
                if (commands.Count == 0) throw new UserBuildException($"the build of {source.Package} in " +
                    $"{string.Join(", ", buildDirectories.Select(d => d.Directory))} shows no C compilation",
                    ExitCode.InputRefused);
                await File.WriteAllTextAsync(commandsPath,
                    JsonSerializer.Serialize(commands, UserBuildJson.Default.ListUnitCommand), cancellation);
                await File.WriteAllTextAsync(Path.Combine(entry, Stamp), $"{source.Package}\n", cancellation);
                var where = buildDirectories.Select(d =>
                    $"{Path.GetRelativePath(source.Tree, d.Directory)} ({d.Tool.ToString().ToLowerInvariant()})");
                progress?.Invoke($"configured {source.Package}: {commands.Count} compile commands in " +
                    $"{string.Join(", ", where)}");
                return new ConfiguredSource(source.Tree, commands);
            }
            catch
            {
                // A half-configured tree must never serve as the pristine "before": unpack afresh next time.
                File.Delete(Path.Combine(entry, ".prepared"));
                File.Delete(commandsPath);
                throw;
            }
        }
    }

    private async Task CheckBuildDependenciesAsync(PreparedSource source, bool install, CancellationToken cancellation)
    {
        var check = await ExternalCommand.RunAsync("dpkg-checkbuilddeps", ["-B"], source.Tree,
            cancellation: cancellation);
        if (check.Succeeded) return;
        var missing = Regex.Match(check.StandardError, "Unmet build dependencies: (.*)") is { Success: true } m
            ? m.Groups[1].Value.Trim() : check.StandardError.Trim();
        if (!install)
            throw new UserBuildException($"configuring {source.Package} as Debian built it needs its build " +
                $"dependencies: {missing}; install them (apt-get build-dep --arch-only {source.Tree}, or " +
                "--install-build-deps)", ExitCode.Environment);
        progress?.Invoke($"installing the build dependencies of {source.Package}: {missing}");
        var installed = await ExternalCommand.RunAsync("apt-get",
            ["-o", "DPkg::Lock::Timeout=600", "-y", "-q", "--no-install-recommends", "build-dep", "--arch-only",
                source.Tree], source.Tree, new Dictionary<string, string> { ["DEBIAN_FRONTEND"] = "noninteractive" },
            cancellation: cancellation);
        if (!installed.Succeeded) throw new UserBuildException($"apt-get build-dep {source.Tree} failed: " +
            $"{installed.StandardError.Trim()}", ExitCode.Environment);
    }

    /// <summary>
    /// The package's dh sequence for an architecture-dependent build, as its debian/rules calls dh (with its own
    /// <c>--with</c>/<c>--without</c>), up to and including the configure step; each step runs inside a makefile that
    /// includes debian/rules, so its exported settings hold, with the build flags exported as dh exports them to
    /// override targets (OpenSSL's Configure, for one, reads CFLAGS from the environment).
    /// </summary>
    private async Task ConfigureTreeAsync(PreparedSource source, CancellationToken cancellation)
    {
        var sequence = await ExternalCommand.RunAsync("make", ["-f", "debian/rules", "build-arch"], source.Tree,
            new Dictionary<string, string> { ["DH_NO_ACT"] = "1" }, cancellation: cancellation);
        var steps = sequence.StandardOutput.Split('\n').Where(l => l.StartsWith("   ", StringComparison.Ordinal))
            .Select(l => l.Trim()).ToList();
        var configure = steps.FindIndex(s => s.Contains("dh_auto_configure", StringComparison.Ordinal));
        if (!sequence.Succeeded || configure < 0)
            throw new UserBuildException($"debian/rules of {source.Package} does not run a dh sequence with a " +
                $"configure step (DH_NO_ACT=1 debian/rules build-arch: {sequence.StandardError.Trim()}); give " +
                "--source with a configured tree and --cflags", ExitCode.InputRefused);
        var makefile = new StringBuilder()
            .AppendLine("include debian/rules")
            .AppendLine("DPKG_EXPORT_BUILDFLAGS = 1")
            .AppendLine("include /usr/share/dpkg/buildflags.mk")
            .AppendLine(".PHONY: kintsugi-configure")
            .AppendLine("kintsugi-configure:");
        foreach (var step in steps.Take(configure + 1)) makefile.Append('\t').AppendLine(step.Replace("$", "$$"));
        var wrapper = Path.Combine(Path.GetDirectoryName(source.Tree)!, "configure.mk");
        await File.WriteAllTextAsync(wrapper, makefile.ToString(), cancellation);
        progress?.Invoke($"configuring {source.Package} as its build does: {string.Join("; ",
            steps.Take(configure + 1))}");
        var log = Path.Combine(Path.GetDirectoryName(source.Tree)!, "configure.log");
        // dh runs an arch-only sequence's steps and overrides with -a in DH_INTERNAL_OPTIONS: dh_listpackages, which
        // rules files read (glib's asks it whether to configure the -doc package's gtk-doc), then names only the
        // architecture-dependent packages, as in Debian's own arch-only build.
        var configured = await ExternalCommand.RunAsync("make", ["-f", wrapper, "kintsugi-configure"], source.Tree,
            new Dictionary<string, string> { ["DH_INTERNAL_OPTIONS"] = "-a" }, cancellation: cancellation);
        await File.WriteAllTextAsync(log, configured.StandardOutput + configured.StandardError, cancellation);
        if (!configured.Succeeded) throw new UserBuildException($"configuring {source.Package} failed (log: {log}): " +
            $"{Tail(configured.StandardError)}", ExitCode.Environment);
    }

    /// <summary>Where a configure step may make a build directory: the tree's top directories (build/,
    /// obj-x86_64-linux-gnu/) and those under debian/ (dh's <c>--builddirectory=debian/build/deb</c>), two levels
    /// deep.</summary>
    private static HashSet<string> CandidateDirectories(string tree)
    {
        var found = Directory.GetDirectories(tree).ToHashSet(StringComparer.Ordinal);
        var debian = Path.Combine(tree, "debian");
        if (Directory.Exists(debian))
            foreach (var d in Directory.GetDirectories(debian))
            {
                found.Add(d);
                found.UnionWith(Directory.GetDirectories(d));
            }
        return found;
    }

    /// <summary>Where the configured build runs, and with what: the tree itself when it has a makefile, and every
    /// candidate directory the configure step created that has a makefile or a build.ninja (Debian builds out of the
    /// tree: build/, build_shared/, obj-x86_64-linux-gnu/, debian/build/deb/). A ninja file wins over a makefile in
    /// one directory: ninja is what the build runs there.</summary>
    private static List<(string Directory, BuildTool Tool)> BuildDirectories(string tree, IReadOnlySet<string> before)
    {
        static bool HasMakefile(string d) =>
            new[] { "GNUmakefile", "makefile", "Makefile" }.Any(m => File.Exists(Path.Combine(d, m)));
        var found = new List<(string, BuildTool)>();
        if (HasMakefile(tree)) found.Add((tree, BuildTool.Make));
        foreach (var d in CandidateDirectories(tree).Except(before).Order(StringComparer.Ordinal))
        {
            if (File.Exists(Path.Combine(d, "build.ninja"))) found.Add((d, BuildTool.Ninja));
            else if (HasMakefile(d)) found.Add((d, BuildTool.Make));
        }
        return found;
    }

    private async Task GenerateHeadersAsync(string buildDirectory, CancellationToken cancellation)
    {
        foreach (var (sub, target) in GeneratedHeaderTargets)
        {
            var directory = Path.GetFullPath(Path.Combine(buildDirectory, sub));
            if (!Directory.Exists(directory)) continue;
            // make -q answers 2 when there is no such target
            var known = await ExternalCommand.RunAsync("make", ["-q", target], directory, cancellation: cancellation);
            if (known.ExitCode == 2) continue;
            progress?.Invoke($"generating headers: make -C {directory} {target}");
            var made = await ExternalCommand.RunAsync("make", [target], directory, cancellation: cancellation);
            if (!made.Succeeded) throw new UserBuildException($"make {target} in {directory} failed: " +
                $"{Tail(made.StandardError)}", ExitCode.Environment);
        }
    }

    /// <summary>The C compilations a dry run of <c>make all</c> prints, with the directory each runs in.</summary>
    private async Task<List<UnitCommand>> PlanAsync(string tree, string buildDirectory,
        CancellationToken cancellation)
    {
        progress?.Invoke($"reading the build's compile commands: make -n all in {buildDirectory}");
        var dry = await ExternalCommand.RunAsync("make", ["-n", "-k", "-w", "all"], buildDirectory,
            cancellation: cancellation);
        return CompileCommands(dry.StandardOutput, tree, buildDirectory).ToList();
    }

    /// <summary>The C compilations of a ninja build directory, from ninja's compilation database (what meson and CMake
    /// wrote into build.ninja; nothing is run).</summary>
    private async Task<List<UnitCommand>> PlanNinjaAsync(string tree, string buildDirectory,
        CancellationToken cancellation)
    {
        progress?.Invoke($"reading the build's compile commands: ninja -t compdb in {buildDirectory}");
        var database = await ExternalCommand.RunAsync("ninja", ["-t", "compdb"], buildDirectory,
            cancellation: cancellation);
        if (!database.Succeeded) throw new UserBuildException($"ninja -t compdb in {buildDirectory} failed: " +
            $"{Tail(database.StandardError)}", ExitCode.Environment);
        return NinjaCompileCommands(database.StandardOutput, tree).ToList();
    }

    /// <summary>
    /// The compilations of C units in a compilation database (<c>[{"directory", "command", "file", "output"}]</c>, as
    /// <c>ninja -t compdb</c> writes it): commands whose program is a C compiler, with <c>-c</c> and one <c>.c</c> unit
    /// inside the tree, run in the entry's directory; their outputs are ninja targets.
    /// </summary>
    public static IEnumerable<UnitCommand> NinjaCompileCommands(string compilationDatabase, string tree)
    {
        using var document = JsonDocument.Parse(compilationDatabase);
        foreach (var entry in document.RootElement.EnumerateArray())
        {
            if (!entry.TryGetProperty("command", out var text) || !entry.TryGetProperty("directory", out var where))
                continue;
            List<List<string>> commands;
            try { commands = ShellWords.SimpleCommands(text.GetString() ?? ""); }
            catch (FormatException) { continue; }
            foreach (var words in commands)
                if (Compilation(words, where.GetString() ?? "", tree, BuildTool.Ninja) is { } command)
                    yield return command;
        }
    }

    /// <summary>One simple command as a unit's compilation in <paramref name="directory"/>, or null when it is not a C
    /// compiler compiling (<c>-c</c>) exactly one <c>.c</c> unit inside the tree.</summary>
    private static UnitCommand? Compilation(List<string> words, string directory, string tree, BuildTool tool)
    {
        if (words.Count < 3 || !IsCompiler(words[0]) || !words.Contains("-c")) return null;
        var units = words.Where(w => w.EndsWith(".c", StringComparison.Ordinal) && !w.StartsWith('-')).ToList();
        if (units.Count != 1) return null;
        var full = Path.GetFullPath(Path.Combine(directory, units[0]));
        if (!full.StartsWith(tree + "/", StringComparison.Ordinal)) return null;
        var output = words.SkipWhile(w => w != "-o").Skip(1).FirstOrDefault();
        return new UnitCommand(Path.GetRelativePath(tree, directory), WithoutOutputs(words), output, tool);
    }

    /// <summary>
    /// The compilations of C units in a dry run's output: simple commands (split at <c>;</c>, <c>&amp;&amp;</c>,
    /// <c>||</c>) whose program is a C compiler, with <c>-c</c> and one <c>.c</c> unit inside the tree; make's
    /// "Entering directory" lines tell where each runs, and a <c>cd DIR</c> before it on its line (CMake's makefiles)
    /// where it runs from there.
    /// </summary>
    public static IEnumerable<UnitCommand> CompileCommands(string dryRun, string tree, string start)
    {
        var directories = new Stack<string>();
        directories.Push(start);
        var text = dryRun.Replace("\\\n", " ");
        foreach (var line in text.Split('\n'))
        {
            var entering = Regex.Match(line, @"^\S*make(?:\[\d+\])?: (Entering|Leaving) directory ['`](.*)'$");
            if (entering.Success)
            {
                if (entering.Groups[1].Value == "Entering") directories.Push(entering.Groups[2].Value);
                else if (directories.Count > 1) directories.Pop();
                continue;
            }
            List<List<string>> commands;
            try { commands = ShellWords.SimpleCommands(line); }
            catch (FormatException) { continue; }
            var directory = directories.Peek();
            foreach (var words in commands)
            {
                if (words is ["cd", var to]) directory = Path.GetFullPath(Path.Combine(directory, to));
                else if (Compilation(words, directory, tree, BuildTool.Make) is { } command) yield return command;
            }
        }
    }

    private static bool IsCompiler(string program) =>
        Regex.IsMatch(Path.GetFileName(program), @"^(?:[a-z0-9_]+-linux-gnu-)?(?:gcc|cc|clang)(?:-\d+)?$");

    /// <summary>The arguments without the output and dependency-file options: the builder names its own output and
    /// never writes into the cached tree.</summary>
    private static List<string> WithoutOutputs(IReadOnlyList<string> words)
    {
        var kept = new List<string>();
        for (var i = 0; i < words.Count; i++)
        {
            var w = words[i];
            if (w is "-o" or "-MF" or "-MT" or "-MQ") { i++; continue; }
            if (w is "-MD" or "-MMD" or "-MP" || w.StartsWith("-Wp,-MD", StringComparison.Ordinal)
                || w.StartsWith("-Wp,-MMD", StringComparison.Ordinal)
                || (w.Length > 2 && (w.StartsWith("-o", StringComparison.Ordinal)
                    || w.StartsWith("-MF", StringComparison.Ordinal)))) continue;
            kept.Add(w);
        }
        return kept;
    }

    private static string Tail(string text) =>
        string.Join('\n', text.Trim().Split('\n').TakeLast(15));
}

/// <summary>Splits a shell command line into simple commands of words, as sh would (quotes and backslashes), at
/// unquoted <c>;</c>, <c>&amp;&amp;</c>, <c>||</c> and <c>|</c>.</summary>
internal static class ShellWords
{
    public static List<List<string>> SimpleCommands(string line)
    {
        var commands = new List<List<string>> { new() };
        var word = new StringBuilder();
        var inWord = false;
        void End() { if (inWord) commands[^1].Add(word.ToString()); word.Clear(); inWord = false; }
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            switch (c)
            {
                case ' ' or '\t': End(); break;
                case ';' or '|' or '&':
                    End();
                    if (i + 1 < line.Length && line[i + 1] == c) i++;
                    commands.Add([]);
                    break;
                case '\\':
                    if (++i < line.Length) word.Append(line[i]);
                    inWord = true;
                    break;
                case '\'':
                    var close = line.IndexOf('\'', i + 1);
                    if (close < 0) throw new FormatException("unterminated '");
                    word.Append(line, i + 1, close - i - 1);
                    i = close;
                    inWord = true;
                    break;
                case '"':
                    inWord = true;
                    for (i++; ; i++)
                    {
                        if (i >= line.Length) throw new FormatException("unterminated \"");
                        if (line[i] == '"') break;
                        if (line[i] == '\\' && i + 1 < line.Length && line[i + 1] is '"' or '\\' or '$' or '`')
                            i++;
                        word.Append(line[i]);
                    }
                    break;
                default: word.Append(c); inWord = true; break;
            }
        }
        End();
        return commands.Where(c => c.Count > 0).ToList();
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(List<UnitCommand>))]
internal sealed partial class UserBuildJson : System.Text.Json.Serialization.JsonSerializerContext;
