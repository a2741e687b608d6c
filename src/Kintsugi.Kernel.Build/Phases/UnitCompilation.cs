using Kintsugi.Kernel.Build.Units;

namespace Kintsugi.Kernel.Build.Phases;

/// <summary>
/// One unit's objects: <see cref="Before"/> and <see cref="After"/> the fixes with one section per function (for
/// the differ), and where <see cref="Original"/>, the unit as the distribution compiled it, is kept for the fidelity
/// proof (compiled by <see cref="UnitCompilation.CompileOriginalsAsync"/> only for the units that change and whose
/// before object cannot prove them, see <see cref="Symbols.UnitCompile"/>).
/// </summary>
public sealed record CompiledUnit(TranslationUnit Unit, string Original, string Before, string After);

/// <summary>
/// The compile phase. The pristine objects (original and before) are cached per kernel; only the after side
/// is compiled for every build, in a view of the tree with every fix applied.
/// </summary>
public static class UnitCompilation
{
    /// <summary>
    /// One section per function and datum for the differ, and no debug information: the differ never reads it, gcc
    /// generates the same code without it (the same instructions and relocations in net/core/dev.o, net/ipv4/route.o
    /// and fs/ext4/inode.o of 6.1), and a distribution's -g makes each object about nine times larger to write, cache
    /// and parse.
    /// </summary>
    private const string DiffFlags = "-ffunction-sections -fdata-sections -g0";

    /// <summary>The objects as the distribution compiled them, kept per kernel.</summary>
    public static PristineObjectCache Originals(BuildTarget target) =>
        new(Path.Combine(target.CacheDirectory, "objects", "original"));

    /// <summary>
    /// The unpatched objects compiled with <see cref="DiffCFlags"/>, kept per kernel and per set of flags (objects
    /// compiled with other flags would not pair with the after side).
    /// </summary>
    public static PristineObjectCache Befores(BuildTarget target) =>
        new(Path.Combine(target.CacheDirectory, "objects", "before-" + Convert.ToHexStringLower(
            System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(DiffFlags)))[..8]));

    /// <summary>
    /// The flags both sides of a diff are compiled with. The compatibility headers live at a fixed place per kernel
    /// so that the flags, and with them the cached pristine objects, stay the same from one build to the next.
    /// </summary>
    public static string DiffCFlags(BuildTarget target)
    {
        var compat = Path.Combine(target.CacheDirectory, "kintsugi-include");
        CompatibilityHeaders.Write(compat);
        return $"{DiffFlags} -I{compat}";
    }

    /// <param name="precompiledAfter">
    /// A directory that may already hold the after objects of some of these units, each compiled with every fix of
    /// this build that it compiles (catch-up compiles the fixes of many files in one make): those are used as they
    /// are, the others compiled.
    /// </param>
    public static async Task<IReadOnlyList<CompiledUnit>> CompileAsync(BuildTarget target, KernelSourceTree tree,
        IReadOnlyList<TranslationUnit> units, IReadOnlyList<LeveledPatch> patches, string workDirectory,
        StageClock clock, CancellationToken cancellation, string? precompiledAfter = null)
    {
        var flags = DiffCFlags(target);
        var before = Befores(target);
        var after = Path.Combine(workDirectory, "after");
        var held = precompiledAfter is null ? []
            : units.Where(u => PristineObjectCache.HoldsAll(precompiledAfter, [u])).ToList();
        if (held.Count == units.Count)
            after = precompiledAfter!;
        else
        {
            // The fixes are applied first, in their own view of the tree, so a fix that does not apply fails fast.
            await using var patched = await BuildWorkspace.OpenAsync(tree, cancellation);
            await clock.RunAsync("apply", async () =>
            {
                foreach (var patch in patches) await patched.ApplyAsync(patch.Patch, cancellation);
            });
            await clock.RunAsync("compile after",
                () => patched.CompileUnitsAsync([.. units.Except(held)], after, flags, cancellation));
            foreach (var unit in held) PristineObjectCache.CopyUnit(precompiledAfter!, after, unit.ObjectPath);
        }
        if (before.Missing(units) is { Count: > 0 } missingBefore)
        {
            await using var pristine = await BuildWorkspace.OpenAsync(tree, cancellation);
            await clock.RunAsync("compile before",
                () => before.CompileAsync(pristine, missingBefore, flags, cancellation));
        }
        var originals = Originals(target);
        var compiled = units.Select(u =>
            new CompiledUnit(u, originals.PathOf(u.ObjectPath), before.PathOf(u.ObjectPath),
            Path.Combine(after, u.ObjectPath))).ToList();
        ExportedSymbolVersions.Check(compiled);
        return compiled;
    }

    /// <summary>
    /// Compiles, as the distribution did, units whose functions the fidelity proof compares with the shipped
    /// kernel: only those that change and whose before object cannot decide the proof.
    /// </summary>
    public static async Task CompileOriginalsAsync(BuildTarget target, KernelSourceTree tree,
        IEnumerable<TranslationUnit> units, StageClock clock, CancellationToken cancellation)
    {
        var originals = Originals(target);
        if (originals.Missing(units.DistinctBy(u => u.ObjectPath)) is not { Count: > 0 } missing) return;
        await using var pristine = await BuildWorkspace.OpenAsync(tree, cancellation);
        await clock.RunAsync("compile original",
            () => originals.CompileAsync(pristine, missing, extraCFlags: null, cancellation));
    }

    /// <summary>
    /// Fills the pristine caches for many units, a chunk of units per make, keeping going past units that do not
    /// compile (each is compiled again, and its error reported, by the build that needs it). Each chunk's objects are
    /// kept as soon as it is done, so an interrupted run loses at most one chunk. Returns the units that failed.
    /// </summary>
    public static async Task<IReadOnlyList<TranslationUnit>> PrecompilePristineAsync(BuildTarget target,
        KernelSourceTree tree, IReadOnlyList<TranslationUnit> units, bool originals, CancellationToken cancellation,
        Action<string>? progress = null)
    {
        var cache = originals ? Originals(target) : Befores(target);
        if (cache.Missing(units.DistinctBy(u => u.ObjectPath)) is not { Count: > 0 } missing) return [];
        progress?.Invoke(
            $"{units.Count - missing.Count} of {units.Count} kept from earlier builds, compiling {missing.Count}");
        var failed = new List<TranslationUnit>();
        var done = 0;
        foreach (var chunk in missing.Chunk(PrecompileChunk))
        {
            await using var pristine = await BuildWorkspace.OpenAsync(tree, cancellation);
            var offset = done;
            failed.AddRange(await cache.CompileAsync(pristine, chunk, originals ? null : DiffCFlags(target),
                cancellation, keepGoing: true, CompileProgress.Every(missing.Count, progress, offset)));
            done += chunk.Length;
        }
        return failed;
    }

    /// <summary>Units per make when many are precompiled: large enough that kbuild's start is a small cost, small
    /// enough that an interruption loses little.</summary>
    public const int PrecompileChunk = 64;
}

/// <summary>A line of progress every tenth of a long compile ("compiled 120 of 644 units").</summary>
public static class CompileProgress
{
    /// <param name="offset">Units compiled by earlier makes of the same work.</param>
    public static Action<int>? Every(int total, Action<string>? progress, int offset = 0)
    {
        if (progress is null) return null;
        var step = Math.Max(10, total / 10);
        return compiled =>
        {
            var sofar = offset + compiled;
            if (sofar % step == 0 || sofar == total) progress($"compiled {sofar} of {total} unit(s)");
        };
    }
}
