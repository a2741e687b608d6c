using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Kernel;

/// <summary>
/// Every object of the real kernel corpus survives the ELF model unchanged, and compared with itself the
/// differ finds nothing to patch. Each test covers the whole corpus and lists every object that fails.
/// </summary>
[Collection(KernelCorpusCollection.Name)]
public sealed class KernelCorpusSpecification
{
    private static readonly string[] TopDirectories = ["kernel/", "mm/", "fs/", "net/", "drivers/", "arch/x86/", "lib/",
        "security/"];

    private static readonly string[] RequiredSections =
        ["__jump_table", "__bug_table", "__ex_table", ".altinstructions", ".altinstr_replacement", ".static_call_sites",
            ".return_sites",
         ".retpoline_sites", "__mcount_loc", ".orc_unwind", ".orc_unwind_ip"];

    private static readonly Lazy<Task<IReadOnlyList<SelfDiff>>> SelfDiffs = new(ComputeSelfDiffsAsync);

    private sealed record SelfDiff(string Object, DiffResult? Result, string? Error);

    private static async Task<IReadOnlyList<SelfDiff>> ComputeSelfDiffsAsync()
    {
        var corpus = await KernelCorpus.GetAsync();
        return [.. KernelCorpus.Objects.AsParallel().AsOrdered().Select(o =>
        {
            try
            {
                var bytes = File.ReadAllBytes(corpus.PathOf(o));
                // Two separate readings, as the builder reads two separate files.
                return new SelfDiff(o,
                    ObjectDiffer.Diff(ElfObject.Read(bytes), ElfObject.Read(bytes),
                    new DiffOptions(corpus.PatchedObjectOf(o), "kintsugi_u0_")), null);
            }
            catch (Exception e) when (e is DiffException or ElfFormatException)
            {
                return new SelfDiff(o, null, $"{e.GetType().Name}: {e.Message}");
            }
        })];
    }

    private static async Task AssertEverySelfDiff(Func<DiffResult, string?> failure)
    {
        var failures = (await SelfDiffs.Value)
            .Select(d => d.Error is { } error ? $"{d.Object}: {error}" : failure(d.Result!) is { } message
                ? $"{d.Object}: {message}" : null)
            .OfType<string>().ToList();
        Assert.True(failures.Count == 0,
            $"{failures.Count} of {KernelCorpus.Objects.Count} objects:\n{string.Join('\n', failures)}");
    }

    [Fact]
    public async Task The_corpus_spans_the_tree_and_holds_every_kernel_special_section()
    {
        var corpus = await KernelCorpus.GetAsync();
        var sections =
            KernelCorpus.Objects.SelectMany(o => ElfObject.Load(corpus.PathOf(o)).Sections.Select(s => s.Name))
            .ToHashSet(StringComparer.Ordinal);

        Assert.True(KernelCorpus.Objects.Distinct().Count() >= 110,
            $"{KernelCorpus.Objects.Distinct().Count()} objects");
        var missingDirectories =
            TopDirectories.Where(d => !KernelCorpus.Objects.Any(o => o.StartsWith(d, StringComparison.Ordinal)))
            .ToList();
        var missingSections = RequiredSections.Where(s => !sections.Contains(s)).ToList();
        Assert.True(missingDirectories.Count == 0, "no object from " + string.Join(", ", missingDirectories));
        Assert.True(missingSections.Count == 0, "no object has " + string.Join(", ", missingSections));
        Assert.Contains(KernelCorpus.Objects, o => !corpus.PatchedObjectOf(o).IsVmlinux);
    }

    [Fact]
    public async Task Every_object_is_written_back_byte_identical()
    {
        var corpus = await KernelCorpus.GetAsync();

        var failures = KernelCorpus.Objects.AsParallel().AsOrdered().Select(o =>
        {
            var original = File.ReadAllBytes(corpus.PathOf(o));
            try
            {
                var written = ElfObject.Read(original).ToArray();
                if (written.AsSpan().SequenceEqual(original)) return null;
                var first = Enumerable.Range(0, Math.Min(written.Length, original.Length))
                    .FirstOrDefault(i => written[i] != original[i], Math.Min(written.Length, original.Length));
                return $"{o}: {original.Length} bytes read, {written.Length} written, first difference at 0x{first:x}";
            }
            catch (ElfFormatException e) { return $"{o}: {e.Message}"; }
        }).OfType<string>().ToList();

        Assert.True(failures.Count == 0,
            $"{failures.Count} of {KernelCorpus.Objects.Count} objects:\n{string.Join('\n', failures)}");
    }

    [Fact]
    public Task An_object_compared_with_itself_has_no_changed_or_new_function() =>
        AssertEverySelfDiff(r => r.Functions.Where(f => f.Kind != FunctionChange.Unchanged)
            .Select(f => $"{f.Name} {f.Kind}").ToList() is { Count: > 0 } found
            ? string.Join(", ", found.Take(10)) + (found.Count > 10 ? $" and {found.Count - 10} more" : "")
            : r.HasChanges ? "reports changes" : null);

    [Fact]
    public Task An_object_compared_with_itself_has_no_data_difference() =>
        AssertEverySelfDiff(r => r.Data.Count > 0 ? string.Join(", ", r.Data.Take(10).Select(d => $"{d.Name} {d.Kind}"))
            : null);

    [Fact]
    public Task An_object_compared_with_itself_is_not_refused() =>
        AssertEverySelfDiff(r => r.IsRefused
            ? string.Join("; ", r.Refusals.Take(5).Select(x => $"{x.Rule} {x.Symbol}: {x.Message}")) : null);

    [Fact]
    public Task An_object_compared_with_itself_builds_no_output() =>
        AssertEverySelfDiff(r => r.Output is not null || r.References.Count > 0 || r.Callbacks.Count > 0
            ? $"output with {r.Output?.Sections.Count ?? 0} sections, {r.References.Count} references, " +
                $"{r.Callbacks.Count} callbacks" : null);
}

/// <summary>
/// Tests over the kernel corpus share one compilation and one machine's two cores: they run one class at a time.
/// </summary>
[CollectionDefinition(Name)]
public sealed class KernelCorpusCollection
{
    public const string Name = "6.1 cloud kernel diff corpus";
}
