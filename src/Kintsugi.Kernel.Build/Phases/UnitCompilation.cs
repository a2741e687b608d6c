using Kintsugi.Kernel.Build.Units;

namespace Kintsugi.Kernel.Build.Phases;

/// <summary>
/// One unit's three objects: <see cref="Original"/> as the distribution compiled it (for the fidelity proof),
/// and <see cref="Before"/> and <see cref="After"/> the fixes with one section per function (for the differ).
/// </summary>
public sealed record CompiledUnit(TranslationUnit Unit, string Original, string Before, string After);

/// <summary>
/// The compile phase. The pristine objects (original and before) are cached per kernel; only the after side
/// is compiled for every build, in a view of the tree with every fix applied.
/// </summary>
public static class UnitCompilation
{
    private const string DiffFlags = "-ffunction-sections -fdata-sections";

    public static async Task<IReadOnlyList<CompiledUnit>> CompileAsync(BuildTarget target, KernelSourceTree tree,
        IReadOnlyList<TranslationUnit> units, IReadOnlyList<LeveledPatch> patches, string workDirectory,
        StageClock clock, CancellationToken cancellation)
    {
        // The compatibility headers live at a fixed place per kernel so that the flags, and with them the
        // cached pristine objects, stay the same from one build to the next.
        var compat = Path.Combine(target.CacheDirectory, "kintsugi-include");
        CompatibilityHeaders.Write(compat);
        var flags = $"{DiffFlags} -I{compat}";
        var original = new PristineObjectCache(Path.Combine(target.CacheDirectory, "objects", "original"));
        var before = new PristineObjectCache(Path.Combine(target.CacheDirectory, "objects", "before"));
        var after = Path.Combine(workDirectory, "after");

        // The fixes are applied first, in their own view of the tree, so a fix that does not apply fails fast.
        await using (var patched = await BuildWorkspace.OpenAsync(tree, cancellation))
        {
            await clock.RunAsync("apply", async () =>
            {
                foreach (var patch in patches) await patched.ApplyAsync(patch.Patch, cancellation);
            });
            if (original.Missing(units).Count > 0 || before.Missing(units).Count > 0)
            {
                await using var pristine = await BuildWorkspace.OpenAsync(tree, cancellation);
                if (original.Missing(units) is { Count: > 0 } missingOriginal)
                    await clock.RunAsync("compile original",
                        () => original.CompileAsync(pristine, missingOriginal, extraCFlags: null, cancellation));
                if (before.Missing(units) is { Count: > 0 } missingBefore)
                    await clock.RunAsync("compile before",
                        () => before.CompileAsync(pristine, missingBefore, flags, cancellation));
            }
            await clock.RunAsync("compile after", () => patched.CompileUnitsAsync(units, after, flags, cancellation));
        }
        var compiled = units.Select(u => new CompiledUnit(u, original.PathOf(u.ObjectPath), before.PathOf(u.ObjectPath),
            Path.Combine(after, u.ObjectPath))).ToList();
        ExportedSymbolVersions.Check(compiled);
        return compiled;
    }
}
