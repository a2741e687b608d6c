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

    public static Task<ResolvedPatch> ResolveAsync(BuildTarget target, IReadOnlyList<UnitDiff> changed,
        ModuleSymvers exports, bool skipFidelity, Action<string> progress, CancellationToken cancellation) =>
        new PatchResolution(target, exports, progress, cancellation).ResolveAsync(changed, skipFidelity);

    private async Task<ResolvedPatch> ResolveAsync(IReadOnlyList<UnitDiff> changed, bool skipFidelity)
    {
        var functions = new List<ResolvedFunction>();
        var callbacks = new Dictionary<string, List<KlpCallbacks>>(StringComparer.Ordinal);
        var bindings = new Dictionary<string, ResolvedBinding>(StringComparer.Ordinal);
        var mismatches = new List<string>();
        var matched = 0;
        var inertSites = new List<ManifestInertSite>();
        var patchDefines = ReferenceBinder.DefinedByPatch(changed.Select(d => d.Result.Output!));
        foreach (var diff in changed)
        {
            var (unit, result) = (diff.Unit, diff.Result);
            var resolver = new SymbolResolver(await ShippedAsync(unit.PatchedObject),
                ElfObject.Load(diff.Compiled.Original));
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
            var patchedObject = await ShippedAsync(unit.PatchedObject);
            var binder = new ReferenceBinder(unit, ReferenceBinder.PolicyFor(unit, _exports, patchedObject), resolver,
                patchDefines, ShippedAsync);
            foreach (var reference in result.References)
            {
                if (bindings.ContainsKey(reference.OutputName)) continue;
                if (await binder.BindAsync(reference) is { } binding)
                    bindings[reference.OutputName] = binding;
            }
            foreach (var site in result.InertSites)
            {
                _progress(
                    $"{unit.SourcePath}: {site.Function}: {site.Reason} (its key {site.Key} lives in " +
                    $"{unit.PatchedObject}, " +
                    "bound too late to switch it)");
                inertSites.Add(new ManifestInertSite(unit.PatchedObject, unit.SourcePath, site.Function, site.Key,
                    site.Use.ToString()));
            }
            // Each unit's callbacks stay its own: the module chains those of several units of one object.
            if (UnitCallbacks(result.Callbacks, unit) is { Any: true } unitCallbacks)
            {
                if (!callbacks.TryGetValue(unit.PatchedObject, out var list)) callbacks[unit.PatchedObject] = list = [];
                list.Add(unitCallbacks);
            }
        }
        return new ResolvedPatch(functions,
            callbacks.ToDictionary(c => c.Key, c => (IReadOnlyList<KlpCallbacks>)[.. c.Value], StringComparer.Ordinal),
            [.. bindings.Values], matched, mismatches, inertSites);
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
