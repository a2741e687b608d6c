using Kintsugi.Diff;
using Kintsugi.Elf;
using Kintsugi.Kernel.Build.Binding;
using Kintsugi.Kernel.Build.Livepatch;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Kernel.Build.Units;

namespace Kintsugi.Kernel.Build.Phases;

/// <summary>A replaced function: the running kernel's symbol it replaces, and the new code's symbol.</summary>
public sealed record ResolvedFunction(string Object, KlpFunction Function, ManifestFunction Record);

/// <summary>A reference the module loader cannot link, bound by livepatch when the patched object is present.</summary>
public sealed record ResolvedBinding(KlpSymbolBinding Binding, ManifestSymbol Record);

/// <summary>
/// The resolve phase's result: every replaced function and every load-time reference identified in the running
/// kernel, each unit's callbacks, and the fidelity proof's verdict.
/// </summary>
/// <param name="Callbacks">Per patched object, one set per unit: the module chains those of several units.</param>
/// <param name="Mismatches">Functions whose compiled original is not the shipped code.</param>
/// <param name="InertSites">Tracepoint sites of module code left disabled (keys bound too late), for the
/// manifest.</param>
public sealed record ResolvedPatch(
    IReadOnlyList<ResolvedFunction> Functions,
    IReadOnlyDictionary<string, IReadOnlyList<KlpCallbacks>> Callbacks,
    IReadOnlyList<ResolvedBinding> Bindings,
    int FunctionsMatched,
    IReadOnlyList<string> Mismatches,
    IReadOnlyList<ManifestInertSite> InertSites)
{
    /// <summary>
    /// A patch built from source that does not reproduce the running kernel could be wrong; it is refused unless
    /// the user asked to skip the proof.
    /// </summary>
    public void ThrowIfUnfaithful(bool skipFidelity)
    {
        if (Mismatches.Count == 0 || skipFidelity) return;
        throw new ModuleBuildException("fidelity proof failed: the prepared source does not reproduce the running " +
            "kernel's code, so a patch built from it could be wrong:\n"
            + string.Join('\n', Mismatches.Select(m => "  " + m)) +
            "\nCheck that the target is the kernel the source belongs to; --skip-fidelity builds anyway (not " +
            "recommended).");
    }

    public ManifestFidelity Fidelity(bool skipFidelity) => new(!skipFidelity, FunctionsMatched, Mismatches);
}

/// <summary>The resolved patch, or (when <see cref="Patch"/> is null) the units whose proof needs them compiled as
/// the distribution did.</summary>
public sealed record ResolutionAttempt(ResolvedPatch? Patch, IReadOnlyList<TranslationUnit> OriginalsNeeded);

/// <summary>
/// The resolve phase: identifies, in the shipped kernel objects, the function each changed function replaces
/// (proving on the way that the compiled original is the shipped code), and binds every reference of the new
/// code that the module loader will not link.
/// </summary>
public sealed class PatchResolution
{
    private readonly BuildTarget _target;
    private readonly ModuleSymvers _exports;
    private readonly Action<string> _progress;
    private readonly CancellationToken _cancellation;
    private readonly Dictionary<string, ShippedObject> _shipped = new(StringComparer.Ordinal);

    private PatchResolution(BuildTarget target, ModuleSymvers exports, Action<string> progress,
        CancellationToken cancellation)
    {
        _target = target;
        _exports = exports;
        _progress = progress;
        _cancellation = cancellation;
    }

    /// <summary>
    /// Resolves the patch, proving each changed function against the shipped object with the unit's before object
    /// (compiled with one section per function for the differ) or, where that cannot decide, with the unit compiled
    /// as the distribution did, which <paramref name="compileOriginals"/> compiles for those units only.
    /// </summary>
    public static async Task<ResolvedPatch> ResolveAsync(BuildTarget target, IReadOnlyList<UnitDiff> changed,
        ModuleSymvers exports, bool skipFidelity, Func<IReadOnlyList<TranslationUnit>, Task> compileOriginals,
        Action<string> progress, CancellationToken cancellation)
    {
        var attempt = await TryResolveAsync(target, changed, exports, skipFidelity, progress, cancellation);
        if (attempt.Patch is { } patch) return patch;
        await compileOriginals(attempt.OriginalsNeeded);
        return (await TryResolveAsync(target, changed, exports, skipFidelity, progress, cancellation)).Patch
            ?? throw new InvalidOperationException("the resolve phase asked again for originals it has: " +
                string.Join(", ", attempt.OriginalsNeeded.Select(u => u.ObjectPath)));
    }

    /// <summary>
    /// Resolves the patch if every unit can be proven without more compiles: a unit whose original (as the
    /// distribution compiled it) is kept is proven with it, any other with its before object; the units whose
    /// before object cannot decide are returned instead, to be compiled as originals (a catch-up compiles those of
    /// all its files in one make).
    /// </summary>
    public static async Task<ResolutionAttempt> TryResolveAsync(BuildTarget target, IReadOnlyList<UnitDiff> changed,
        ModuleSymvers exports, bool skipFidelity, Action<string> progress, CancellationToken cancellation)
    {
        var resolution = new PatchResolution(target, exports, progress, cancellation);
        var patchDefines = ReferenceBinder.DefinedByPatch(changed.Select(d => d.Result.Output!));
        var units = new List<UnitResolution>();
        var originalsNeeded = new List<TranslationUnit>();
        // A reference an earlier unit bound is bound once, as that unit bound it.
        var bound = new HashSet<string>(StringComparer.Ordinal);
        foreach (var diff in changed)
        {
            try
            {
                units.Add(await resolution.ResolveUnitAsync(diff, patchDefines, bound, skipFidelity));
            }
            catch (OriginalCompileNeededException)
            {
                originalsNeeded.Add(diff.Unit);
            }
        }
        return originalsNeeded.Count > 0 ? new ResolutionAttempt(null, originalsNeeded)
            : new ResolutionAttempt(resolution.Merge(units), []);
    }

    /// <summary>What one unit contributes to the patch.</summary>
    private sealed record UnitResolution(TranslationUnit Unit, IReadOnlyList<ResolvedFunction> Functions,
        IReadOnlyList<ResolvedBinding> Bindings, int Matched, IReadOnlyList<string> Mismatches,
        IReadOnlyList<InertSite> InertSites, KlpCallbacks Callbacks);

    private async Task<UnitResolution> ResolveUnitAsync(UnitDiff diff, IReadOnlySet<string> patchDefines,
        HashSet<string> bound, bool skipFidelity)
    {
        var (unit, result) = (diff.Unit, diff.Result);
        var functions = new List<ResolvedFunction>();
        var bindings = new List<ResolvedBinding>();
        var mismatches = new List<string>();
        var matched = 0;
        var patchedObject = await ShippedAsync(unit.PatchedObject);
        var resolver = File.Exists(diff.Compiled.Original)
            ? new SymbolResolver(patchedObject, ElfObject.Load(diff.Compiled.Original), UnitCompile.AsDistributed)
            : new SymbolResolver(patchedObject, ElfObject.Load(diff.Compiled.Before), UnitCompile.SectionPerFunction);
        foreach (var function in result.Functions.Where(f => f.Kind == FunctionChange.Changed))
        {
            var resolved = resolver.ResolveFunction(function.Name, out var mismatch);
            if (resolved is null)
            {
                mismatches.Add($"{unit.SourcePath}: {mismatch}");
                if (!skipFidelity) continue;
                resolved = resolver.Resolve(function.Name);
            }
            else matched++;
            functions.Add(new ResolvedFunction(unit.PatchedObject,
                new KlpFunction(function.Name, resolved.Sympos, function.OutputSymbol!),
                new ManifestFunction(unit.PatchedObject, function.Name, resolved.Sympos.Value,
                    resolved.Method.ToString(), unit.SourcePath)));
        }
        var binder = new ReferenceBinder(unit, ReferenceBinder.PolicyFor(unit, _exports, patchedObject), resolver,
            patchDefines, ShippedAsync);
        foreach (var reference in result.References)
            if (bound.Add(reference.OutputName) && await binder.BindAsync(reference) is { } binding)
                bindings.Add(binding);
        return new UnitResolution(unit, functions, bindings, matched, mismatches, result.InertSites,
            UnitCallbacks(result.Callbacks, unit));
    }

    /// <summary>The units' contributions in the order of the diffs. Each unit's callbacks stay its own: the module
    /// chains those of several units of one object.</summary>
    private ResolvedPatch Merge(IReadOnlyList<UnitResolution> units)
    {
        var callbacks = new Dictionary<string, List<KlpCallbacks>>(StringComparer.Ordinal);
        var inertSites = new List<ManifestInertSite>();
        foreach (var unit in units)
        {
            var (source, patched) = (unit.Unit.SourcePath, unit.Unit.PatchedObject);
            foreach (var site in unit.InertSites)
            {
                _progress($"{source}: {site.Function}: {site.Reason} (its key {site.Key} lives in {patched}, " +
                    "bound too late to switch it)");
                inertSites.Add(new ManifestInertSite(patched, source, site.Function, site.Key, site.Use.ToString()));
            }
            if (unit.Callbacks is { Any: true } unitCallbacks)
            {
                if (!callbacks.TryGetValue(unit.Unit.PatchedObject, out var list))
                    callbacks[unit.Unit.PatchedObject] = list = [];
                list.Add(unitCallbacks);
            }
        }
        return new ResolvedPatch([.. units.SelectMany(u => u.Functions)],
            callbacks.ToDictionary(c => c.Key, c => (IReadOnlyList<KlpCallbacks>)[.. c.Value], StringComparer.Ordinal),
            [.. units.SelectMany(u => u.Bindings)], units.Sum(u => u.Matched), [.. units.SelectMany(u => u.Mismatches)],
            inertSites);
    }

    private async Task<ShippedObject> ShippedAsync(string objectName)
    {
        if (!_shipped.TryGetValue(objectName, out var found))
            _shipped[objectName] = found = objectName == KernelObjectNames.Vmlinux
                ? await _target.VmlinuxAsync(_progress, _cancellation)
                : await _target.ModuleAsync(objectName, _cancellation);
        return found;
    }

    private static KlpCallbacks UnitCallbacks(IReadOnlyList<string> names, TranslationUnit unit)
    {
        var callbacks = KlpCallbacks.None;
        foreach (var name in names)
        {
            var kind = KernelNames.CallbackKind(name)
                ?? throw new LivepatchRefusedException(
                    $"{unit.SourcePath}: {name} is not a callback name this builder knows");
            string? Set(string? existing) => existing is null ? name
                : throw new LivepatchRefusedException($"{unit.SourcePath} has two {kind} callbacks " +
                    $"({existing} and {name}); a unit takes one of each kind: call both from one function");
            callbacks = kind switch
            {
                "pre_patch" => callbacks with { PrePatch = Set(callbacks.PrePatch) },
                "post_patch" => callbacks with { PostPatch = Set(callbacks.PostPatch) },
                "pre_unpatch" => callbacks with { PreUnpatch = Set(callbacks.PreUnpatch) },
                _ => callbacks with { PostUnpatch = Set(callbacks.PostUnpatch) },
            };
        }
        return callbacks;
    }
}
