using System.Buffers.Binary;
using System.Diagnostics;
using System.Text.RegularExpressions;
using Kintsugi.Diff;
using Kintsugi.Elf;

namespace Kintsugi.User.Build;

/// <summary>What to build: the exact shipped object, the source it was built from, the fix, and the compiler flags
/// used.</summary>
/// <param name="CompilerFlags">The distribution's flags (dpkg-buildflags' CFLAGS and CPPFLAGS for a Debian
/// package).</param>
/// <param name="WorkingDirectory">Where the package's build compiled the units from, relative to the source tree (e.g.
/// a build directory).</param>
/// <param name="Configured">The source tree configured as the package's build configures it: each unit is compiled
/// with the command that build uses for it (<see cref="CompilerFlags"/> and <see cref="WorkingDirectory"/> then serve
/// only units it does not compile).</param>
/// <param name="FixedObjectPath">A build of the same object that already carries the fix (a distribution's security
/// update of the same source, which the running processes cannot take without a restart): each replaced function's
/// fixed code is then proven equal to that build's, as its original is to the shipped code.</param>
public sealed record
    UserBuildRequest(string ObjectPath, string SourceDirectory, string FixPath, IReadOnlyList<string> CompilerFlags,
    string Name, string OutputPath, string? Description = null, string Compiler = "gcc", string WorkingDirectory = ".",
    ConfiguredSource? Configured = null, string? FixedObjectPath = null);

/// <summary>A patch built: where it was written, what it replaces, and how long each phase took.</summary>
public sealed record
    UserBuildResult(string OutputPath, BuildId Target, IReadOnlyList<string> Units, IReadOnlyList<string> Functions,
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
        void Phase(string name)
        {
            phases[name] = clock.Elapsed.TotalSeconds; clock.Restart(); progress?.Invoke(
            $"{name} done");
        }

        var target = ElfImage.Load(request.ObjectPath);
        var buildId = target.BuildId ?? throw new UserBuildException($"{request.ObjectPath} has no GNU build-id; a " +
            $"patch could not identify it in a process");
        var shipped = ShippedFunctions(target, request.ObjectPath);
        var fixedBuild = request.FixedObjectPath is { } fixedPath ? ElfImage.Load(fixedPath) : null;
        var fixedFunctions = fixedBuild is null ? null : ShippedFunctions(fixedBuild, request.FixedObjectPath!);
        Phase("identify");

        var fixText = File.ReadAllText(request.FixPath);
        var files = FixedFiles(fixText);
        var units = TouchedUnits(files);
        foreach (var ignored in files.Except(units))
            progress?.Invoke($"{ignored}: a test or documentation file, not compiled into the object; ignored");
        // Before the fixed copy is made from the pristine tree, so that both have what the build generates.
        if (request.Configured is { } configured)
            foreach (var command in units.SelectMany(configured.CommandsFor))
                await configured.MakePrerequisitesAsync(command, progress, cancellation);
        var work = Directory.CreateTempSubdirectory("kintsugi-user-build-").FullName;
        try
        {
            var patchedTree = Path.Combine(work, "after");
            await CopyForFix(Path.GetFullPath(request.SourceDirectory), patchedTree, files, cancellation);
            var applied = await ExternalCommand.RunAsync("patch",
                ["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", Path.GetFullPath(request.FixPath)],
                patchedTree, cancellation: cancellation);
            if (!applied.Succeeded) throw new UserBuildException($"the fix does not apply to " +
                $"{request.SourceDirectory}:\n{applied.StandardOutput}{applied.StandardError}");
            Phase("apply");

            var named = target.Symbols(dynamic: false).Concat(target.Symbols(dynamic: true)).Where(s => s.Defined)
                .Select(s => s.Name).ToHashSet();
            var changed = new List<(string Unit, string After, List<string> Functions)>();
            var located = new List<ElfImageSymbol>();
            foreach (var unit in units)
            {
                var compiled = await CompileAndProve(request, patchedTree, unit, work, target, shipped, phases,
                    cancellation);
                if (compiled.Functions.Count == 0) continue;
                if (fixedBuild is not null)
                {
                    var afterObject = ElfObject.Load(compiled.After);
                    foreach (var function in compiled.Functions)
                        ProveFidelity(function, afterObject, fixedBuild, fixedFunctions!, unit, FixedBuild);
                    progress?.Invoke($"{unit}: the fixed code of {string.Join(", ", compiled.Functions)} equals " +
                        $"{request.FixedObjectPath}'s");
                }
                changed.Add((unit, compiled.After, compiled.Functions));
                located.AddRange(compiled.Originals.Where(o => !named.Contains(o.Name)));
                located.AddRange(RecoveredReferences(compiled.Functions, compiled.Originals,
                    ElfObject.Load(compiled.Before), target, named));
            }
            clock.Restart();
            if (changed.Count == 0)
                throw new UserBuildException("the fix changes no machine code of the object (only comments, or code " +
                    "the compiler removed); no patch was written",
                    ExitCode.NothingToDo);
            var allFunctions = changed.SelectMany(c => c.Functions).ToList();
            if (allFunctions.GroupBy(f => f).FirstOrDefault(g => g.Count() > 1) is { } twice)
                throw new UserBuildException($"{twice.Key} changes in more than one unit " +
                    $"({string.Join(", ", changed.Where(c => c.Functions.Contains(twice.Key)).Select(c => c.Unit))}):" +
                    $" " +
                    "a static function of that name in each; which one is which cannot be told apart in the object. " +
                    "Split the fix by unit");

            var patch = PatchLinker.Link(request.ObjectPath, changed.Select(c => c.After).ToList(), allFunctions,
                request.Name, request.Description,
                located.DistinctBy(l => (l.Name, l.Value)).ToList());
            patch.Save(request.OutputPath);
            Phase("link");
            return new UserBuildResult(request.OutputPath, buildId, units, allFunctions, phases);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private sealed record ProvenUnit(string Before, string After, List<string> Functions,
        List<ElfImageSymbol> Originals);

    /// <summary>
    /// One unit compiled before and after the fix, diffed, and its changed functions proven against the shipped code.
    /// With a configured tree, each command its package build compiles the unit with is tried in turn (a static and a
    /// shared build, say): the first whose original proves equal to the shipped code is the one that made the object.
    /// Phase times (compile, diff, prove) add up over the units.
    /// </summary>
    private async Task<ProvenUnit> CompileAndProve(UserBuildRequest request, string patchedTree, string unit,
        string work, ElfImage target, Dictionary<string, ElfImageSymbol> shipped, Dictionary<string, double> phases,
        CancellationToken cancellation)
    {
        var pristine = Path.GetFullPath(request.SourceDirectory);
        var commands = request.Configured?.CommandsFor(unit) is { Count: > 0 } found ? found
            : [new UnitCommand(request.WorkingDirectory, FlagsCommand(request, target, unit))];
        if (request.Configured is not null && commands.Count == 1 && request.Configured.CommandsFor(unit).Count == 0)
            progress?.Invoke($"{unit}: the package's build does not compile it in its default target; compiling " +
                "with the package's flags");
        UserBuildException? first = null;
        var clock = Stopwatch.StartNew();
        void Add(string phase)
        {
            phases[phase] = phases.GetValueOrDefault(phase) + clock.Elapsed.TotalSeconds;
            clock.Restart();
        }
        for (var c = 0; c < commands.Count; c++)
        {
            var name = $"{unit.Replace('/', '_')}.{c}";
            var before = Path.Combine(work, name + ".before.o");
            var after = Path.Combine(work, name + ".after.o");
            await Compile(commands[c], pristine, pristine, unit, before, cancellation);
            await Compile(commands[c], pristine, patchedTree, unit, after, cancellation);
            Add("compile");
            var beforeObject = ElfObject.Load(before);
            var functions = Diff(unit, beforeObject, ElfObject.Load(after));
            Add("diff");
            try
            {
                var originals = functions.Select(function =>
                    ProveFidelity(function, beforeObject, target, shipped, unit)).ToList();
                Add("prove");
                if (c > 0) progress?.Invoke($"{unit}: compiled as {commands[c]}");
                return new ProvenUnit(before, after, functions, originals);
            }
            catch (UserBuildException e) when (e.Rule == "fidelity" && c + 1 < commands.Count)
            {
                first ??= e;
                progress?.Invoke($"{unit}: {commands[c]} did not make the shipped code; trying the build's next " +
                    "command for it");
            }
        }
        throw first!;
    }

    /// <summary>The compile command from the distribution's flags alone, for a tree that is not configured.</summary>
    private static List<string> FlagsCommand(UserBuildRequest request, ElfImage target, string unit)
    {
        var arguments = new List<string> { request.Compiler };
        arguments.AddRange(request.CompilerFlags);
        // A shared library (no interpreter) is position-independent code; Debian's gcc already defaults to -fPIE.
        if (target.Type == 3 && !target.Segments.Any(s => s.Type == 3)) arguments.Add("-fPIC");
        // The unit is named relative to where it compiles, so __FILE__ is the same in both trees: with the trees'
        // absolute paths every ereport()/assert() would differ between before and after.
        arguments.AddRange(["-c", Path.GetRelativePath(request.WorkingDirectory, unit)]);
        return arguments;
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
            Console.Error.WriteLine($"kintsugi: {path} has no symbol table (stripped): what it does not export is " +
                $"found by its code");
        return functions;
    }

    /// <summary>The files a fix changes (from its <c>+++</c> lines), relative to the tree.</summary>
    internal static IReadOnlyList<string> FixedFiles(string fix)
    {
        var files = FixedFile().Matches(fix).Select(m => m.Groups[1].Value.Trim()).Where(f => f != "/dev/null")
            .Select(f => f.Contains('/') ? f[(f.IndexOf('/') + 1)..] : f).Distinct().ToList();
        if (files.Count == 0) throw new UserBuildException("the fix is not a unified diff (no +++ lines)");
        if (files.FirstOrDefault(f => Path.IsPathRooted(f) || f.Split('/').Contains("..")) is { } outside)
            throw new UserBuildException($"the fix names {outside}, outside the source tree");
        return files;
    }

    /// <summary>
    /// The C units among the fixed files. Regression tests and documentation (an upstream commit usually carries
    /// them) are not compiled into the object and are left out; a header or a build file is refused: which units
    /// include it, or what else it changes, is not known here.
    /// </summary>
    internal static IReadOnlyList<string> TouchedUnits(IReadOnlyList<string> files)
    {
        var compiled = files.Where(f => !IsTestOrDocumentation(f)).ToList();
        var notC = compiled.Where(f => !f.EndsWith(".c")).ToList();
        if (notC.Count > 0)
            throw new UserBuildException($"the fix changes {string.Join(", ", notC)}: only .c units are supported " +
                $"(rule: a header or build change " +
                "may change data layouts and every unit including it); move the change into the .c file that needs it");
        if (compiled.Count == 0) throw new UserBuildException("the fix changes only tests or documentation; nothing " +
            "is compiled into the object",
            ExitCode.NothingToDo);
        return compiled;
    }

    internal static IReadOnlyList<string> TouchedUnits(string fix) => TouchedUnits(FixedFiles(fix));

    private static bool IsTestOrDocumentation(string file) =>
        file.Split('/')[..^1].Any(d =>
        d is "test" or "tests" or "t" or "doc" or "docs" or "expected" or "sql" or "regress")
        || Path.GetExtension(file) is ".sql" or ".out" or ".sgml" or ".md" or ".rst" or ".txt" or ".spec";

    /// <summary>Compiles <paramref name="unit"/> of <paramref name="tree"/> (the pristine one or the fixed copy) as
    /// <paramref name="command"/> says, run where the build runs it, with one section per function and datum. A build
    /// in a separate directory (PostgreSQL's VPATH build) names the pristine tree by its absolute path in sources,
    /// include directories and <c>-ffile-prefix-map</c>: in the fixed copy those name the copy, so that it compiles
    /// its own fixed source and both trees map to the same file names (<c>__FILE__</c>, debug info).</summary>
    private static async Task Compile(UnitCommand command, string pristine, string tree, string unit,
        string output, CancellationToken cancellation)
    {
        var directory = Path.GetFullPath(Path.Combine(tree, command.Directory));
        var inTree = new Regex(Regex.Escape(pristine) + "(?=/|=|$)");
        var arguments = command.Arguments.Skip(1).Select(a => tree == pristine ? a : inTree.Replace(a, tree))
            .Concat(["-ffunction-sections", "-fdata-sections", "-o", output]).ToList();
        var result = await ExternalCommand.RunAsync(command.Arguments[0], arguments, directory,
            cancellation: cancellation);
        if (result.Succeeded) return;
        var missing = Regex.Match(result.StandardError, @"fatal error: (\S+): No such file or directory");
        throw new UserBuildException($"{command.Arguments[0]} failed on {unit} ({tree}):\n{result.StandardError}" +
            (missing.Success ? $"{missing.Groups[1].Value} is missing: a header the package's build generates; " +
                "configure the tree (kintsugi user build --package, without --cflags) or build it once in the tree"
                : ""));
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
        var result = ObjectDiffer.Diff(before, after,
            new DiffOptions(PatchedObjectName.Parse("user"), "kintsugi_") { LineFunctions = LineFunctions });
        foreach (var refusal in result.Refusals)
        {
            switch (refusal.Rule)
            {
                // a kernel rule: user-space entries are redirected by a jump, not ftrace
                case RefusalRule.NoFtraceEntry: continue;
                case RefusalRule.DataChanged:
                    throw new UserBuildException($"{unit}: the fix changes the existing data {refusal.Symbol} (its " +
                    $"initial value, size or place) " +
                        "(rule: data layout). A running process keeps its data; keep the old definition and change " +
                        "behaviour in code");
                default:
                    throw new UserBuildException($"{unit}: {refusal.Symbol}: {refusal.Message} (rule: {refusal.Rule})");
            }
        }
        return result.Functions.Where(f => f.Kind == FunctionChange.Changed && !f.Name.Contains(".cold"))
            .Select(f => f.Name).ToList();
    }

    /// <summary>
    /// The fidelity proof: the function compiled from the pristine source equals the shipped code, byte for
    /// byte, except where a relocation is filled in at link time (and the two bytes before a relaxable GOT
    /// load, which the linker may rewrite). Otherwise the flags or the compiler differ from the distribution's,
    /// and a patch built from this compilation could not be trusted.
    /// A function the object's symbol tables do not name (a <c>static</c> function or a compiler clone in a
    /// stripped object) is found by the same comparison: the one place in the object's code, at the function's
    /// alignment, where the compiled original matches. None, or more than one, is a refusal. Returns where the
    /// function is in the object.
    /// </summary>
    private static ElfImageSymbol ProveFidelity(string function, ElfObject before, ElfImage target, Dictionary<string,
        ElfImageSymbol> shipped, string unit, Comparison? comparison = null)
    {
        comparison ??= ShippedBuild;
        var symbol = before.SymbolTable?.Symbols.FirstOrDefault(s =>
            s.Name == function && s.Type == ElfSymbolType.Function && s.Section is ElfDataSection)
            ?? throw new UserBuildException($"{function} is not defined in the {comparison.Compiled} of {unit}");
        var compiled = ((ElfDataSection)symbol.Section!).Data.AsSpan((int)symbol.Value, (int)symbol.Size);
        var masked = new bool[compiled.Length];
        foreach (var relocations in before.GetRelocationSections(symbol.Section!))
            foreach (var r in relocations.Relocations)
            {
                if (r.Offset < symbol.Value || r.Offset >= symbol.Value + symbol.Size) continue;
                var start = (long)(r.Offset - symbol.Value);
                var width = r.Type is X86RelocationType.R64 ? 8 : 4;
                var relaxable = r.Type is X86RelocationType.GotPcRelX or X86RelocationType.RexGotPcRelX;
                for (var i = start - (relaxable ? 2 : 0); i < start + width; i++) if (i >= 0 && i < masked.Length)
                    masked[i] = true;
            }
        if (!shipped.TryGetValue(function, out var original))
        {
            if (comparison != ShippedBuild)
                throw comparison.Refusal($"{function} ({unit}) is not in the symbol tables of the fixed build; its " +
                    $"code cannot be compared (rule: {comparison.Rule})");
            return LocateByCode(function, compiled, masked, Math.Max(1UL, symbol.Section!.Alignment), target, unit);
        }
        var code = target.ReadAt(original.Value, original.Size);
        if (compiled.Length != code.Length)
            throw comparison.Refusal($"{function}: the {comparison.Compiled} is {compiled.Length} bytes, the " +
                $"{comparison.Shipped} {code.Length} (rule: {comparison.Rule}): {comparison.Advice}");
        for (var i = 0; i < compiled.Length; i++)
            if (!masked[i] && compiled[i] != code[i])
                throw comparison.Refusal($"{function}: the {comparison.Compiled} differs from the " +
                    $"{comparison.Shipped} at +0x{i:x} (rule: {comparison.Rule}): {comparison.Advice}");
        return original;
    }

    /// <summary>What a fidelity comparison compares, for its refusal: the compiled original against the shipped
    /// code, or the compiled fix against a build that already carries it.</summary>
    private sealed record Comparison(string Compiled, string Shipped, string Rule, string Advice)
    {
        public UserBuildException Refusal(string message) => new(message) { Rule = Rule };
    }

    private static readonly Comparison ShippedBuild = new("compiled original", "shipped code", "fidelity",
        "the compiler or the flags differ from the distribution's build; use its exact flags (dpkg-buildflags, " +
        "debian/rules)");

    private static readonly Comparison FixedBuild = new("compiled fix", "fixed build's code", "fixed-build",
        "the fix is not the one that build carries, or that build was made from another source or with other flags " +
        "(other changes to the unit, a newer compiler)");

    /// <summary>
    /// What the proven originals refer to that the object's symbol tables do not name (its static data and static
    /// functions, when it is stripped), read from the shipped code itself: at each PC-relative relocation site of a
    /// proven function the linker wrote S + A - P, so S is known (so too where it relaxed a GOT load of another
    /// unit's hidden datum into a lea). The replacement then binds to the object's own
    /// variable, never to a copy. A name seen at two different addresses is left out (and is copied or refused).
    /// </summary>
    private static IEnumerable<ElfImageSymbol>
        RecoveredReferences(IReadOnlyList<string> functions, IReadOnlyList<ElfImageSymbol> originals,
        ElfObject before, ElfImage target, IReadOnlySet<string> named)
    {
        var found = new Dictionary<string, ElfImageSymbol?>(StringComparer.Ordinal);
        for (var f = 0; f < functions.Count; f++)
        {
            var symbol = before.SymbolTable!.Symbols.First(s =>
                s.Name == functions[f] && s.Type == ElfSymbolType.Function && s.Section is ElfDataSection);
            var shipped = target.ReadAt(originals[f].Value, originals[f].Size);
            foreach (var relocations in before.GetRelocationSections(symbol.Section!))
                foreach (var r in relocations.Relocations)
                {
                    if (r.Offset < symbol.Value || r.Offset + 4 > symbol.Value + symbol.Size) continue;
                    if (r.Symbol is null) continue;
                    var at = (int)(r.Offset - symbol.Value);
                    // Data of another unit the object keeps to itself (hidden, or hidden by a version script): the
                    // unit loads its address from the GOT, and the linker relaxed that load to a lea of the datum.
                    var relaxedGot = r.Type is X86RelocationType.GotPcRelX or X86RelocationType.RexGotPcRelX
                        && r.Symbol.IsUndefined && at >= 2 && shipped[at - 2] == 0x8d && !named.Contains(r.Symbol.Name);
                    if (!relaxedGot && r.Type is not (X86RelocationType.PC32 or X86RelocationType.Plt32)) continue;
                    var entity = relaxedGot ? r.Symbol
                        : r.Symbol.Type == ElfSymbolType.Section ? OnlyEntityOf(before, r.Symbol.Section) : r.Symbol;
                    if (entity is null || entity.Name.Length == 0 || named.Contains(entity.Name)) continue;
                    if (!relaxedGot && (r.Symbol.IsUndefined
                        || entity.Type is not (ElfSymbolType.Function or ElfSymbolType.Object))) continue;
                    var place = originals[f].Value + (r.Offset - symbol.Value);
                    var written = BinaryPrimitives.ReadInt32LittleEndian(shipped[at..]);
                    var address = (ulong)((long)place + written - r.Addend);
                    var recovered = new ElfImageSymbol(entity.Name, address, entity.Size,
                        entity.Type == ElfSymbolType.Function ? ElfImageSymbol.TypeFunction : ElfImageSymbol.TypeObject,
                        relaxedGot ? ElfImageSymbol.BindingGlobal : ElfImageSymbol.BindingLocal, 1, false);
                    if (!found.TryGetValue(entity.Name, out var known)) found[entity.Name] = recovered;
                    else if (known is not null && known.Value != address) found[entity.Name] = null;
                }
        }
        return found.Values.OfType<ElfImageSymbol>();
    }

    private static ElfSymbol? OnlyEntityOf(ElfObject unit, ElfSection? section)
    {
        var defined = unit.SymbolTable?.Symbols.Where(s =>
            ReferenceEquals(s.Section, section) && s.Type is ElfSymbolType.Function or ElfSymbolType.Object)
            .ToList() ?? [];
        return defined.Count == 1 && defined[0].Value == 0 ? defined[0] : null;
    }

    /// <summary>The compiled original is not the shipped code: the flags, the compiler or the configuration differ
    /// from the distribution's build.</summary>
    private static UserBuildException Infidelity(string message) => new(message) { Rule = "fidelity" };

    /// <summary>Functions shorter than this are not looked for by their code: too many places could match.</summary>
    private const int MinimumLocatableSize = 16;

    private static ElfImageSymbol LocateByCode(string function, ReadOnlySpan<byte> compiled, bool[] masked,
        ulong alignment, ElfImage target, string unit)
    {
        var unmasked = masked.Count(m => !m);
        if (compiled.Length < MinimumLocatableSize || unmasked < MinimumLocatableSize)
            throw new UserBuildException($"{function} ({unit}) is not in the object's symbol table (a static " +
                $"function or a compiler clone in a stripped " +
                $"object), and its {compiled.Length} bytes are too few to find it by its code; use the object with " +
                $"symbols (the -dbgsym debug file)");
        var anchor = Array.IndexOf(masked, false);
        var found = new List<ulong>();
        foreach (var segment in target.Segments.Where(s => s.Type == ElfSegment.Load && (s.Flags & 1) != 0))
        {
            var code = target.ReadAt(segment.VirtualAddress, segment.FileSize);
            var first = (segment.VirtualAddress + alignment - 1) / alignment * alignment - segment.VirtualAddress;
            for (var at = (long)first; at + compiled.Length <= code.Length; at += (long)alignment)
            {
                if (code[(int)at + anchor] != compiled[anchor]) continue;
                var candidate = code.Slice((int)at, compiled.Length);
                var same = true;
                for (var i = 0; i < compiled.Length && same; i++) same = masked[i] || candidate[i] == compiled[i];
                if (same) found.Add(segment.VirtualAddress + (ulong)at);
            }
        }
        return found.Count switch
        {
            1 => new ElfImageSymbol(function, found[0], (ulong)compiled.Length, ElfImageSymbol.TypeFunction,
                ElfImageSymbol.BindingLocal, 1, false),
            0 => throw Infidelity($"{function} ({unit}) is not in the object's symbol table, and its " +
            $"compiled original matches nowhere in " +
                "the object's code (rule: fidelity): it was inlined into its callers (patch them), or the compiler " +
                "or the flags differ from the " +
                "distribution's build"),
            _ => throw new UserBuildException($"{function} ({unit}) is not in the object's symbol table, and its " +
            $"compiled original matches " +
                $"{found.Count} places in the object's code (at 0x{found[0]:x}, 0x{found[1]:x}, ...): which one is " +
                $"meant is ambiguous; " +
                "use the object with symbols (the -dbgsym debug file)"),
        };
    }

    /// <summary>
    /// The tree the fix is applied to: hard links to the pristine tree (a whole package's source in a second or
    /// two), except the files the fix touches, which are copies of their own, so patching them can never write
    /// through a link into the pristine tree (the cached "before").
    /// </summary>
    private static async Task
        CopyForFix(string pristine, string copy, IReadOnlyList<string> touched, CancellationToken cancellation)
    {
        await Run("cp", ["-al", pristine, copy], Path.GetDirectoryName(copy)!, cancellation);
        foreach (var unit in touched)
        {
            var file = Path.Combine(copy, unit);
            if (!File.Exists(file)) continue; // a new file: patch creates it
            var own = file + ".kintsugi-copy";
            File.Copy(file, own);
            File.Move(own, file, overwrite: true);
        }
    }

    private static async Task Run(string file, string[] arguments, string directory, CancellationToken cancellation)
    {
        var result = await ExternalCommand.RunAsync(file, arguments, directory, cancellation: cancellation);
        if (!result.Succeeded)
            throw new UserBuildException($"{file} {string.Join(' ', arguments)} failed: {result.StandardError}");
    }

    [GeneratedRegex(@"^\+\+\+ (\S+)", RegexOptions.Multiline)]
    private static partial Regex FixedFile();
}
