using Kintsugi.Elf;
using Kintsugi.Kernel.Build;
using Kintsugi.Testing;

namespace Kintsugi.Diff.Tests.Kernel;

/// <summary>
/// A small edit of one real unit: the only occurrence of <paramref name="Find"/> in <paramref name="SourcePath"/>
/// becomes <paramref name="Replace"/>.
/// </summary>
/// <param name="Unit">The object the file is compiled into, when it is not the file's own (kernel/sched/ includes its
/// .c files into a few units).</param>
public sealed record KernelEdit(string Name, string SourcePath, string Find, string Replace, string? Unit = null)
{
    public string ObjectPath => Unit ?? SourcePath[..^2] + ".o";
}

/// <summary>One edit's before and after objects and what the differ makes of them.</summary>
public sealed record KernelPair(KernelEdit Edit, PatchedObjectName Object, ElfObject Before, ElfObject After,
    DiffResult Result);

/// <summary>
/// Before/after pairs of real units of the 6.1 cloud kernel. Each edit becomes a patch of the prepared tree;
/// all of them are applied in one workspace (they touch different files) and their units compiled in one make
/// invocation, cached like the corpus. The before objects are the corpus's own (same flags, same tree).
/// </summary>
public sealed class KernelPairs
{
    private static readonly Lazy<Task<KernelPairs>> Instance = new(CreateAsync);

    private readonly KernelCorpus _corpus;
    private readonly string _afterDirectory;

    private KernelPairs(KernelCorpus corpus, string afterDirectory)
    {
        _corpus = corpus;
        _afterDirectory = afterDirectory;
    }

    public static Task<KernelPairs> GetAsync() => Instance.Value;

    public KernelPair Diff(KernelEdit edit)
    {
        var patchedObject = _corpus.PatchedObjectOf(edit.ObjectPath);
        var before = ElfObject.Load(_corpus.PathOf(edit.ObjectPath));
        var after = ElfObject.Load(Path.Combine(_afterDirectory, edit.ObjectPath));
        var result = ObjectDiffer.Diff(ElfObject.Load(_corpus.PathOf(edit.ObjectPath)),
            ElfObject.Load(Path.Combine(_afterDirectory, edit.ObjectPath)),
            // As the builder does: a module unit's keys are decided with the kernel's exports.
            new DiffOptions(patchedObject, "kintsugi_u0_")
            { Exports = patchedObject.IsVmlinux ? KernelExports.None : _corpus.Exports });
        return new KernelPair(edit, patchedObject, before, after, result);
    }

    private static async Task<KernelPairs> CreateAsync()
    {
        var corpus = await KernelCorpus.GetAsync();
        var edits = KernelEdits.All;
        if (edits.Select(e => e.SourcePath).Distinct().Count() != edits.Count)
            throw new InvalidOperationException("two edits touch one file; they are applied together");
        if (edits.FirstOrDefault(e => !KernelCorpus.Objects.Contains(e.ObjectPath)) is { } outside)
            throw new InvalidOperationException($"{outside.Name}: {outside.ObjectPath} is not in the corpus, whose " +
                "objects are the pairs' before objects");
        var patches = new List<SourcePatch>();
        foreach (var edit in edits) patches.Add(await PatchOfAsync(corpus.Tree, edit));
        var after = await KernelCorpus.CompiledOnceAsync(corpus.Tree, "pairs", [.. edits.Select(e => e.ObjectPath)],
            patches);
        return new KernelPairs(corpus, after);
    }

    /// <summary>The edit as a unified diff of the tree, made by diff(1) from the file and its edited copy.</summary>
    private static async Task<SourcePatch> PatchOfAsync(KernelSourceTree tree, KernelEdit edit)
    {
        var source = Path.Combine(tree.Directory, edit.SourcePath);
        var text = await File.ReadAllTextAsync(source);
        var at = text.IndexOf(edit.Find, StringComparison.Ordinal);
        if (at < 0 || text.IndexOf(edit.Find, at + 1, StringComparison.Ordinal) >= 0)
            throw new InvalidOperationException($"{edit.Name}: the text to replace must occur exactly once in " +
                $"{edit.SourcePath}:\n{edit.Find}");
        using var temporary = new TemporaryDirectory();
        var edited = temporary.File("edited.c");
        await File.WriteAllTextAsync(edited,
            string.Concat(text.AsSpan(0, at), edit.Replace, text.AsSpan(at + edit.Find.Length)));
        var diff = await ExternalCommand.RunAsync("diff",
            ["-u", "--label", "a/" + edit.SourcePath, "--label", "b/" + edit.SourcePath, source, edited]);
        if (diff.ExitCode != 1)
            throw new InvalidOperationException($"{edit.Name}: diff -u failed: {diff.StandardError}");
        return SourcePatch.Parse(edit.Name + ".patch", diff.StandardOutput);
    }
}
