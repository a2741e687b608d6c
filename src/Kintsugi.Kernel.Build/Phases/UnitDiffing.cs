using Kintsugi.Diff;
using Kintsugi.Elf;
using Kintsugi.Kernel.Build.Symbols;

namespace Kintsugi.Kernel.Build.Phases;

/// <summary>What the differ found in one unit: changed and new functions, references, callbacks, refusals.</summary>
public sealed record UnitDiff(CompiledUnit Compiled, DiffResult Result)
{
    public Units.TranslationUnit Unit => Compiled.Unit;

    /// <summary>A unit goes into the module when it replaces code or brings callbacks.</summary>
    public bool Contributes => Result.HasChanges || Result.Callbacks.Count > 0;

    public IEnumerable<string> Refusals => Result.Refusals.Select(r => $"{Unit.SourcePath}: {r.Symbol}: {r.Message}");

    public IEnumerable<string> Notes =>
        Result.Functions.Where(f => f.Note is not null).Select(f => $"{Unit.SourcePath}: {f.Name}: {f.Note}");
}

/// <summary>The diff phase: every compiled unit's before and after objects, compared function by function.</summary>
public static class UnitDiffing
{
    /// <param name="exports">
    /// Read only when a module unit is diffed: it tells the module's own static keys from linked ones, and a fix
    /// of vmlinux alone needs no Module.symvers.
    /// </param>
    /// <param name="objtoolAtLink">objtool runs over the linked livepatch module (IBT kernels), not over each
    /// unit.</param>
    public static IReadOnlyList<UnitDiff> DiffAll(IReadOnlyList<CompiledUnit> units, Lazy<ModuleSymvers> exports,
        bool objtoolAtLink) =>
        [.. units.Select((compiled, i) =>
            new UnitDiff(compiled, Diff(compiled, OutputPrefix(i), exports, objtoolAtLink)))];

    /// <summary>Refuses the whole build when any unit holds something that cannot be live patched.</summary>
    public static void ThrowIfRefused(IReadOnlyList<UnitDiff> diffs)
    {
        var refusals = diffs.SelectMany(d => d.Refusals).ToList();
        if (refusals.Count > 0)
            throw new LivepatchRefusedException(
                $"this fix cannot be live patched safely:\n{string.Join('\n', refusals.Select(r => "  " + r))}",
                [.. diffs.SelectMany(d => d.Result.Refusals.Select(r => r.Rule)).Distinct()]);
    }

    /// <summary>New symbols of unit i are prefixed so that units of one module never collide.</summary>
    private static string OutputPrefix(int index) => $"kintsugi_u{index}_";

    private static DiffResult Diff(CompiledUnit compiled, string prefix, Lazy<ModuleSymvers> exports,
        bool objtoolAtLink)
    {
        var unit = compiled.Unit;
        var options = new DiffOptions(PatchedObjectName.Parse(unit.PatchedObject),
            prefix)
        { ObjtoolAtModuleLink = objtoolAtLink };
        if (!unit.IsVmlinux) options = options with { Exports = exports.Value.Exports };
        return ObjectDiffer.Diff(ElfObject.Load(compiled.Before), ElfObject.Load(compiled.After), options);
    }
}
