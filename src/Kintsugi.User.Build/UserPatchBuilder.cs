using System.Diagnostics;
using System.Text.RegularExpressions;
using Kintsugi.Diff;
using Kintsugi.Elf;

namespace Kintsugi.User.Build;

/// <summary>What to build: the exact shipped object, the source it was built from, the fix, and the compiler flags used.</summary>
/// <param name="CompilerFlags">The distribution's flags (dpkg-buildflags' CFLAGS and CPPFLAGS for a Debian package).</param>
/// <param name="WorkingDirectory">Where the package's build compiled the units from, relative to the source tree (e.g. a build directory).</param>
public sealed record UserBuildRequest(string ObjectPath, string SourceDirectory, string FixPath, IReadOnlyList<string> CompilerFlags,
    string Name, string OutputPath, string? Description = null, string Compiler = "gcc", string WorkingDirectory = ".");

/// <summary>A patch built: where it was written, what it replaces, and how long each phase took.</summary>
public sealed record UserBuildResult(string OutputPath, BuildId Target, IReadOnlyList<string> Units, IReadOnlyList<string> Functions,
    IReadOnlyDictionary<string, double> PhaseSeconds);

/// <summary>
/// <c>kintsugi user build</c>: a fix to the source of one exact ELF object becomes a user-space patch, in named
/// phases: <b>identify</b> the object (build-id, symbols), <b>apply</b> the fix to a copy of the source (the
/// pristine tree is never written), <b>compile</b> the touched units before and after with the distribution's
/// flags and one section per function, <b>diff</b> them with the differ, <b>prove</b> that each changed
/// function's compiled original equals the shipped code outside relocation sites, and <b>link</b> the new code.
/// Whatever cannot be patched is refused with its rule and what to do.
/// </summary>
public sealed partial class UserPatchBuilder(Action<string>? progress = null)
{
    public async Task<UserBuildResult> BuildAsync(UserBuildRequest request, CancellationToken cancellation = default)
    {
        var phases = new Dictionary<string, double>();
        var clock = Stopwatch.StartNew();
        void Phase(string name) { phases[name] = clock.Elapsed.TotalSeconds; clock.Restart(); progress?.Invoke($"{name} done"); }

        var target = ElfImage.Load(request.ObjectPath);
        var buildId = target.BuildId ?? throw new UserBuildException($"{request.ObjectPath} has no GNU build-id; a patch could not identify it in a process");
        var shipped = ShippedFunctions(target, request.ObjectPath);
        Phase("identify");

        var units = TouchedUnits(File.ReadAllText(request.FixPath));
        var work = Directory.CreateTempSubdirectory("kintsugi-user-build-").FullName;
        try
        {
            var patchedTree = Path.Combine(work, "after");
            await Run("cp", ["-a", "--reflink=auto", Path.GetFullPath(request.SourceDirectory), patchedTree], work, cancellation);
            var applied = await ExternalCommand.RunAsync("patch", ["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", Path.GetFullPath(request.FixPath)],
                patchedTree, cancellation: cancellation);
            if (!applied.Succeeded) throw new UserBuildException($"the fix does not apply to {request.SourceDirectory}:\n{applied.StandardOutput}{applied.StandardError}");
            Phase("apply");

            var objects = new List<(string Unit, string Before, string After)>();
            foreach (var unit in units)
            {
                var name = unit.Replace('/', '_');
                var before = Path.Combine(work, name + ".before.o");
                var after = Path.Combine(work, name + ".after.o");
                await Compile(request, Path.GetFullPath(request.SourceDirectory), unit, before, target, cancellation);
                await Compile(request, patchedTree, unit, after, target, cancellation);
                objects.Add((unit, before, after));
            }
            Phase("compile");

            var changed = new List<(string Unit, string After, List<string> Functions)>();
            foreach (var (unit, before, after) in objects)
            {
                var functions = Diff(unit, ElfObject.Load(before), ElfObject.Load(after));
                if (functions.Count > 0) changed.Add((unit, after, functions));
            }
            if (changed.Count == 0)
                throw new UserBuildException("the fix changes no machine code of the object (only comments, or code the compiler removed); no patch was written",
                    ExitCode.NothingToDo);
            if (changed.Count > 1)
                throw new UserBuildException($"the fix changes code in {changed.Count} units ({string.Join(", ", changed.Select(c => c.Unit))}); " +
                    "one patch per unit for now: split the fix");
            Phase("diff");

            var (changedUnit, afterObject, changedFunctions) = changed[0];
            var beforeObject = ElfObject.Load(objects.Single(o => o.Unit == changedUnit).Before);
            foreach (var function in changedFunctions) ProveFidelity(function, beforeObject, target, shipped, changedUnit);
            Phase("prove");

            var patch = PatchLinker.Link(request.ObjectPath, afterObject, changedFunctions, request.Name, request.Description);
            patch.Save(request.OutputPath);
            Phase("link");
            return new UserBuildResult(request.OutputPath, buildId, units, changedFunctions, phases);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static Dictionary<string, ElfImageSymbol> ShippedFunctions(ElfImage target, string path)
    {
        var functions = new Dictionary<string, ElfImageSymbol>();
        var duplicates = new HashSet<string>();
        foreach (var s in target.Symbols(dynamic: false).Concat(target.Symbols(dynamic: true)))
        {
            if (s.Type != ElfImageSymbol.TypeFunction || !s.Defined || s.Size == 0) continue;
            if (functions.TryGetValue(s.Name, out var known) && known.Value != s.Value) duplicates.Add(s.Name);
            functions[s.Name] = s;
        }
        foreach (var name in duplicates) functions.Remove(name);
        if (!target.HasSection(".symtab"))
            Console.Error.WriteLine($"kintsugi: {path} has no symbol table (stripped): only exported functions can be found");
        return functions;
    }

    /// <summary>The C units a fix touches (from its <c>+++</c> lines); a header is refused: which units include it is not known here.</summary>
    internal static IReadOnlyList<string> TouchedUnits(string fix)
    {
        var files = FixedFile().Matches(fix).Select(m => m.Groups[1].Value.Trim()).Where(f => f != "/dev/null")
            .Select(f => f.Contains('/') ? f[(f.IndexOf('/') + 1)..] : f).Distinct().ToList();
        if (files.Count == 0) throw new UserBuildException("the fix is not a unified diff (no +++ lines)");
        var notC = files.Where(f => !f.EndsWith(".c")).ToList();
        if (notC.Count > 0)
            throw new UserBuildException($"the fix changes {string.Join(", ", notC)}: only .c units are supported (rule: a header or build change " +
                "may change data layouts and every unit including it); move the change into the .c file that needs it");
        return files;
    }

    private async Task Compile(UserBuildRequest request, string tree, string unit, string output, ElfImage target, CancellationToken cancellation)
    {
        var arguments = new List<string>(request.CompilerFlags);
        // A shared library (no interpreter) is position-independent code; Debian's gcc already defaults to -fPIE.
        if (target.Type == 3 && !target.Segments.Any(s => s.Type == 3)) arguments.Add("-fPIC");
        var directory = Path.GetFullPath(Path.Combine(tree, request.WorkingDirectory));
        // The unit is named relative to where it compiles, so __FILE__ is the same in both trees: with the trees'
        // absolute paths every ereport()/assert() would differ between before and after.
        arguments.AddRange(["-ffunction-sections", "-fdata-sections", "-c", Path.GetRelativePath(directory, Path.Combine(tree, unit)), "-o", output]);
        var result = await ExternalCommand.RunAsync(request.Compiler, arguments, directory, cancellation: cancellation);
        if (!result.Succeeded) throw new UserBuildException($"{request.Compiler} failed on {unit} ({tree}):\n{result.StandardError}");
    }

    /// <summary>
    /// User-space functions that receive their caller's __LINE__ in a register: glibc's assert, PostgreSQL's
    /// ereport/elog (errfinish) and Assert (ExceptionalCondition). A fix that adds lines moves every later call
    /// of theirs in the unit; those functions are not changed by it.
    /// </summary>
    private static readonly IReadOnlySet<string> LineFunctions = new HashSet<string>(StringComparer.Ordinal)
    {
        "__assert_fail", "__assert_perror_fail", "errfinish", "ExceptionalCondition",
    };

    /// <summary>The changed functions of one unit; refusals become the user-space rules.</summary>
    private static List<string> Diff(string unit, ElfObject before, ElfObject after)
    {
        var result = ObjectDiffer.Diff(before, after, new DiffOptions(PatchedObjectName.Parse("user"), "kintsugi_") { LineFunctions = LineFunctions });
        foreach (var refusal in result.Refusals)
        {
            switch (refusal.Rule)
            {
                case RefusalRule.NoFtraceEntry: continue; // a kernel rule: user-space entries are redirected by a jump, not ftrace
                case RefusalRule.DataChanged:
                    throw new UserBuildException($"{unit}: the fix changes the existing data {refusal.Symbol} (its initial value, size or place) " +
                        "(rule: data layout). A running process keeps its data; keep the old definition and change behaviour in code");
                default:
                    throw new UserBuildException($"{unit}: {refusal.Symbol}: {refusal.Message} (rule: {refusal.Rule})");
            }
        }
        return result.Functions.Where(f => f.Kind == FunctionChange.Changed && !f.Name.Contains(".cold")).Select(f => f.Name).ToList();
    }

    /// <summary>
    /// The fidelity proof: the function compiled from the pristine source equals the shipped code, byte for
    /// byte, except where a relocation is filled in at link time (and the two bytes before a relaxable GOT
    /// load, which the linker may rewrite). Otherwise the flags or the compiler differ from the distribution's,
    /// and a patch built from this compilation could not be trusted.
    /// </summary>
    private static void ProveFidelity(string function, ElfObject before, ElfImage target, Dictionary<string, ElfImageSymbol> shipped, string unit)
    {
        if (!shipped.TryGetValue(function, out var original))
            throw new UserBuildException($"{function} ({unit}) is not in the object's symbol table: it was inlined into its callers, is a local clone, " +
                "or the object is stripped (use the build with symbols, e.g. from the -dbgsym package's debug file)");
        var symbol = before.SymbolTable?.Symbols.FirstOrDefault(s => s.Name == function && s.Type == ElfSymbolType.Function && s.Section is ElfDataSection)
            ?? throw new UserBuildException($"{function} is not defined in the compiled original of {unit}");
        var compiled = ((ElfDataSection)symbol.Section!).Data.AsSpan((int)symbol.Value, (int)symbol.Size);
        var code = target.ReadAt(original.Value, original.Size);
        if (compiled.Length != code.Length)
            throw new UserBuildException($"{function}: the compiled original is {compiled.Length} bytes, the shipped code {code.Length} " +
                "(rule: fidelity): the compiler or the flags differ from the distribution's build; use its exact flags (dpkg-buildflags, debian/rules)");
        var masked = new bool[compiled.Length];
        foreach (var relocations in before.GetRelocationSections(symbol.Section!))
            foreach (var r in relocations.Relocations)
            {
                if (r.Offset < symbol.Value || r.Offset >= symbol.Value + symbol.Size) continue;
                var start = (long)(r.Offset - symbol.Value);
                var width = r.Type is X86RelocationType.R64 ? 8 : 4;
                var relaxable = r.Type is X86RelocationType.GotPcRelX or X86RelocationType.RexGotPcRelX;
                for (var i = start - (relaxable ? 2 : 0); i < start + width; i++) if (i >= 0 && i < masked.Length) masked[i] = true;
            }
        for (var i = 0; i < compiled.Length; i++)
            if (!masked[i] && compiled[i] != code[i])
                throw new UserBuildException($"{function}: the compiled original differs from the shipped code at +0x{i:x} (rule: fidelity): " +
                    "the compiler or the flags differ from the distribution's build; use its exact flags (dpkg-buildflags, debian/rules)");
    }

    private static async Task Run(string file, string[] arguments, string directory, CancellationToken cancellation)
    {
        var result = await ExternalCommand.RunAsync(file, arguments, directory, cancellation: cancellation);
        if (!result.Succeeded) throw new UserBuildException($"{file} {string.Join(' ', arguments)} failed: {result.StandardError}");
    }

    [GeneratedRegex(@"^\+\+\+ (\S+)", RegexOptions.Multiline)]
    private static partial Regex FixedFile();
}
