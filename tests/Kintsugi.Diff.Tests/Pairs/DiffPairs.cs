using System.Collections.Concurrent;
using Kintsugi.Elf;
using Kintsugi.Testing;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>
/// The before/after C pairs of tests/fixtures/diff-pairs, each side compiled by gcc-12 with the kernel's x86-64
/// code generation flags, once per test run (two compilers at a time) into one temporary directory.
/// </summary>
internal static class DiffPairs
{
    /// <summary>The symbol tag of every diff here, as the builder gives the first unit of a build.</summary>
    public const string Tag = "kintsugi_u0_";

    /// <summary>
    /// What kbuild passes gcc for x86-64 objects (plus the differ's -ffunction-sections -fdata-sections).
    /// </summary>
    public static readonly string[] KernelFlags =
    [
        "-O2", "-nostdinc", "-ffreestanding", "-fno-PIE", "-mcmodel=kernel", "-mno-red-zone", "-fno-common",
            "-fno-strict-aliasing",
        "-ffunction-sections", "-fdata-sections", "-pg", "-mfentry", "-mrecord-mcount", "-fcf-protection=branch",
        "-fno-asynchronous-unwind-tables", "-mindirect-branch=thunk-extern", "-mindirect-branch-register",
        "-mfunction-return=thunk-extern", "-fno-jump-tables", "-mno-sse", "-mno-mmx", "-mno-sse2", "-mno-3dnow",
            "-mno-avx",
        "-fno-stack-protector", "-fno-delete-null-pointer-checks", "-fno-strict-overflow", "-Wall", "-Werror",
            "-Wno-unused-function",
    ];

    public static string Fixtures { get; } = Path.Combine(Repository.Root, "tests", "fixtures", "diff-pairs");

    private static readonly Lazy<IReadOnlyDictionary<string, (byte[] Before, byte[] After)>> Objects = new(CompileAll);
    private static readonly ConcurrentDictionary<(string, string), Lazy<PairDiff>> Diffs = new();

    /// <summary>Every pair: a directory with before.c and after.c.</summary>
    public static IReadOnlyList<string> Names { get; } =
        [.. Directory.GetDirectories(Fixtures).Where(d => File.Exists(Path.Combine(d, "before.c")))
            .Select(Path.GetFileName).Order(StringComparer.Ordinal)!];

    public static TheoryData<string> All => new(Names);

    /// <summary>The pair's compiled objects, before and after its fix.</summary>
    public static (byte[] Before, byte[] After) Compiled(string name) =>
        Objects.Value.TryGetValue(name, out var pair) ? pair
        : throw new ArgumentException($"no pair named {name} in {Fixtures}");

    /// <summary>The pair diffed for vmlinux (or <paramref name="module"/>), computed once per run.</summary>
    /// <param name="objtoolAtLink">As for a kernel where objtool runs over the linked livepatch module (IBT).</param>
    public static PairDiff Diff(string name, string? module = null, bool objtoolAtLink = false) =>
        Diffs.GetOrAdd((name, (module ?? "vmlinux") + (objtoolAtLink ? "+objtool-at-link" : "")),
            key => new Lazy<PairDiff>(() =>
        {
            var (before, after) = Objects.Value.TryGetValue(key.Item1, out var pair) ? pair
                : throw new ArgumentException($"no pair named {key.Item1} in {Fixtures}");
            var target = module is null ? PatchedObjectName.Vmlinux : PatchedObjectName.Parse(module);
            var original = ElfObject.Read(before);
            var patched = ElfObject.Read(after);
            var options = new DiffOptions(target, Tag) { ObjtoolAtModuleLink = objtoolAtLink };
            return new PairDiff(key.Item1, original, patched, ObjectDiffer.Diff(original, patched, options));
        })).Value;

    private static IReadOnlyDictionary<string, (byte[], byte[])> CompileAll()
    {
        var directory = new TemporaryDirectory();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => directory.Dispose();
        var jobs = Names.SelectMany(name => new[] { (Name: name, Side: "before"), (Name: name, Side: "after") });
        var compiled = new ConcurrentDictionary<(string, string), byte[]>();
        Parallel.ForEach(jobs, new ParallelOptions { MaxDegreeOfParallelism = 2 }, job =>
        {
            // Both sides are compiled as <pair>.c from a directory of their own, so __FILE__ is the same in both, as in
            // a kernel tree.
            var side = Directory.CreateDirectory(directory.File(job.Side)).FullName;
            var source = Path.Combine(side, job.Name + ".c");
            File.Copy(Path.Combine(Fixtures, job.Name, job.Side + ".c"), source, overwrite: true);
            var output = Path.Combine(side, job.Name + ".o");
            string[] arguments =
            [
                "-c", .. KernelFlags,
                "-I", Path.Combine(Fixtures, "include"),
                "-I", Path.Combine(Repository.Root, "src", "Kintsugi.Kernel.Build", "Compat"),
                "-I", Path.Combine(Fixtures, job.Name),
                "-o", output, job.Name + ".c",
            ];
            var result = ExternalCommand.RunAsync("gcc-12", arguments, workingDirectory: side).GetAwaiter().GetResult();
            if (!result.Succeeded)
                throw new InvalidOperationException(
                    $"gcc-12 failed on {job.Name}/{job.Side}.c:\n{result.StandardError}");
            compiled[(job.Name, job.Side)] = File.ReadAllBytes(output);
        });
        return Names.ToDictionary(n => n, n => (compiled[(n, "before")], compiled[(n, "after")]),
            StringComparer.Ordinal);
    }
}

/// <summary>One pair's objects and the differ's verdict, with the questions the specifications ask of it.</summary>
internal sealed record PairDiff(string Name, ElfObject Before, ElfObject After, DiffResult Result)
{
    public FunctionDiff Function(string name) =>
        Result.Functions.SingleOrDefault(f => f.Name == name)
        ?? throw new Xunit.Sdk.XunitException($"{Name}: no function {name} in the diff; it has " +
            $"{string.Join(", ", Result.Functions.Select(f => f.Name))}");

    public FunctionChange Kind(string function) => Function(function).Kind;

    public ElfObject Output => Result.Output ?? throw new Xunit.Sdk.XunitException(
        $"{Name}: no output object (refusals: " +
        $"{string.Join("; ", Result.Refusals.Select(r => $"{r.Rule} {r.Symbol}"))}; changes: {Result.HasChanges})");

    /// <summary>The output's defined symbols (functions and objects) by name.</summary>
    public IReadOnlyDictionary<string, ElfSymbol> Defined =>
        Output.SymbolTable!.Symbols.Where(s => s.Section is not null && s.Type is ElfSymbolType.Function
            or ElfSymbolType.Object)
            .ToDictionary(s => s.Name, StringComparer.Ordinal);

    public IReadOnlyList<string> DefinedFunctions =>
        [.. Output.SymbolTable!.Symbols.Where(s => s.Section is not null && s.Type == ElfSymbolType.Function)
            .Select(s => s.Name).Order(StringComparer.Ordinal)];

    public IReadOnlyList<string> Undefined =>
        [.. Output.SymbolTable!.Symbols.Where(s => s.IsUndefined && s.Name.Length > 0).Select(s => s.Name)
            .Order(StringComparer.Ordinal)];

    public LoadTimeReference Reference(string outputName) =>
        Result.References.SingleOrDefault(r => r.OutputName == outputName)
        ?? throw new Xunit.Sdk.XunitException($"{Name}: no reference {outputName}; references: " +
            $"{string.Join(", ", Result.References.Select(r => r.OutputName))}");

    public DiffRefusal Refusal(RefusalRule rule) =>
        Result.Refusals.SingleOrDefault(r => r.Rule == rule)
        ?? throw new Xunit.Sdk.XunitException($"{Name}: no {rule} refusal; refusals: " +
            $"{string.Join("; ", Result.Refusals.Select(r => $"{r.Rule} {r.Symbol}: {r.Message}"))}");

    /// <summary>The relocations of an output section (by name), as the names of the symbols they point at.</summary>
    public IReadOnlyList<string> RelocationTargets(string section)
    {
        var target = Output.FindSection(section)
            ?? throw new Xunit.Sdk.XunitException($"{Name}: the output has no section {section}");
        return [.. Output.GetRelocationSections(target).SelectMany(r => r.Relocations).OrderBy(r => r.Offset)
            .Select(r => r.Symbol is { Type: ElfSymbolType.Section } s ? s.Section!.Name : r.Symbol?.Name ?? "")];
    }

    public IEnumerable<ElfSection> OutputSections(string name) => Output.Sections.Where(s => s.Name == name);

    /// <summary>
    /// The name of the original's numbered static local with this base name used by <paramref name="function"/>.
    /// </summary>
    public static string StaticUsedBy(ElfObject elf, string function, string baseName)
    {
        var symbol = elf.SymbolTable!.Symbols.Single(s => s.Name == function && s.Type == ElfSymbolType.Function);
        var relocations = elf.GetRelocationSections(symbol.Section!).SelectMany(r => r.Relocations);
        var names = relocations.Select(r => r.Symbol).Where(s => s is not null)
            .SelectMany(s => s!.Type == ElfSymbolType.Section
                ? elf.SymbolTable.Symbols.Where(d => d.Section == s.Section && d.Type == ElfSymbolType.Object)
                : [s])
            .Select(s => s.Name).Where(n => n.StartsWith(baseName + ".", StringComparison.Ordinal)).Distinct().ToList();
        return names.Count == 1 ? names[0]
            : throw new Xunit.Sdk.XunitException($"{function} uses {names.Count} statics named {baseName}.N");
    }
}
