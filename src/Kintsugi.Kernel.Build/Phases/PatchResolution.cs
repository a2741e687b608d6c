using System.Text.RegularExpressions;
using Kintsugi.Diff;
using Kintsugi.Elf;
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
public sealed record ResolvedPatch(
    IReadOnlyList<ResolvedFunction> Functions,
    IReadOnlyDictionary<string, IReadOnlyList<KlpCallbacks>> Callbacks,
    IReadOnlyList<ResolvedBinding> Bindings,
    int FunctionsMatched,
    IReadOnlyList<string> Mismatches)
{
    /// <summary>
    /// A patch built from source that does not reproduce the running kernel could be wrong; it is refused unless
    /// the user asked to skip the proof.
    /// </summary>
    public void ThrowIfUnfaithful(bool skipFidelity)
    {
        if (Mismatches.Count == 0 || skipFidelity) return;
        throw new ModuleBuildException("fidelity proof failed: the prepared source does not reproduce the running " +
            "kernel's code, so a patch built from it could be wrong:\n" + string.Join('\n', Mismatches.Select(m => "  " + m)) +
            "\nCheck that the target is the kernel the source belongs to; --skip-fidelity builds anyway (not recommended).");
    }

    public ManifestFidelity Fidelity(bool skipFidelity) => new(!skipFidelity, FunctionsMatched, Mismatches);
}

/// <summary>
/// The resolve phase: identifies, in the shipped kernel objects, the function each changed function replaces
/// (proving on the way that the compiled original is the shipped code), and binds every reference of the new
/// code that the module loader will not link.
/// </summary>
public sealed partial class PatchResolution
{
    private readonly BuildTarget _target;
    private readonly ModuleSymvers _exports;
    private readonly Action<string> _progress;
    private readonly CancellationToken _cancellation;
    private readonly Dictionary<string, ShippedObject> _shipped = new(StringComparer.Ordinal);

    private PatchResolution(BuildTarget target, ModuleSymvers exports, Action<string> progress, CancellationToken cancellation)
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
        foreach (var diff in changed)
        {
            var (unit, result) = (diff.Unit, diff.Result);
            var resolver = new SymbolResolver(await ShippedAsync(unit.PatchedObject), ElfObject.Load(diff.Compiled.Original));
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
                    new ManifestFunction(unit.PatchedObject, function.Name, resolved.Sympos.Value, resolved.Method.ToString(),
                        unit.SourcePath)));
            }
            foreach (var reference in result.References)
            {
                if (bindings.ContainsKey(reference.OutputName)) continue;
                if (await BindingForAsync(unit, reference, resolver) is { } binding)
                    bindings[reference.OutputName] = binding;
            }
            await NameStaticCallKeysAsync(result, bindings);
            // Each unit's callbacks stay its own: the module chains those of several units of one object.
            if (UnitCallbacks(result.Callbacks, unit) is { Any: true } unitCallbacks)
            {
                if (!callbacks.TryGetValue(unit.PatchedObject, out var list)) callbacks[unit.PatchedObject] = list = [];
                list.Add(unitCallbacks);
            }
        }
        return new ResolvedPatch(functions,
            callbacks.ToDictionary(c => c.Key, c => (IReadOnlyList<KlpCallbacks>)[.. c.Value], StringComparer.Ordinal),
            [.. bindings.Values], matched, mismatches);
    }

    private async Task<ShippedObject> ShippedAsync(string objectName)
    {
        if (!_shipped.TryGetValue(objectName, out var found))
            _shipped[objectName] = found = objectName == "vmlinux"
                ? await _target.VmlinuxAsync(_progress, _cancellation)
                : await _target.ModuleAsync(objectName, _cancellation);
        return found;
    }

    private async Task<ResolvedBinding?> BindingForAsync(TranslationUnit unit, LoadTimeReference reference,
        SymbolResolver resolver)
    {
        static ResolvedBinding Bind(LoadTimeReference reference, ResolvedSymbol resolved, string how) =>
            new(new KlpSymbolBinding(reference.OutputName, resolved.Object, resolved.Name, resolved.Sympos),
                new ManifestSymbol(resolved.Object, resolved.Name, resolved.Sympos.Value, resolved.Method.ToString(), how));

        if (reference.DefinedInUnit && reference.IsLocal)
            return Bind(reference, resolver.Resolve(reference.TargetName), "local");
        var export = _exports.Find(reference.TargetName);
        // The module loader links exports, except those of the patched module itself, which may load after the patch.
        if (export is not null && (export.Object == "vmlinux" || export.Object != unit.PatchedObject)) return null;
        if (reference.DefinedInUnit || export is not null)
            return Bind(reference, resolver.Resolve(reference.TargetName),
                export is null ? "unexported" : "export of the patched module");
        // Defined in another unit and not exported: it lives in the patched object, or (for module code) possibly
        // in vmlinux.
        var own = await ShippedAsync(unit.PatchedObject);
        if (own.Symbols.Named(reference.TargetName).Count > 0)
            return Bind(reference, new SymbolResolver(own, new ElfObject()).Resolve(reference.TargetName), "unexported");
        if (!unit.IsVmlinux)
        {
            var vmlinux = await ShippedAsync("vmlinux");
            if (vmlinux.Symbols.Named(reference.TargetName).Count > 0)
                return Bind(reference, new SymbolResolver(vmlinux, new ElfObject()).Resolve(reference.TargetName), "unexported");
        }
        throw new LivepatchRefusedException($"{unit.SourcePath}: the fixed code references {reference.TargetName}, " +
            $"which the running kernel neither exports nor has in {unit.PatchedObject}; it may be new in the fix's " +
            "kernel version: backport it into the patched unit as a static function");
    }

    /// <summary>
    /// Where objtool runs only when a module is linked (IBT kernels), it writes the patch module's static call
    /// sites then; for a key it cannot find in the module it records the trampoline instead, which the kernel
    /// accepts only for exported static calls ("Failed to fixup __raw_static_call() usage"). Naming each
    /// called trampoline's key as an undefined symbol of the diff object lets objtool record the key itself,
    /// bound by livepatch like any other unexported symbol of vmlinux.
    /// </summary>
    private async Task NameStaticCallKeysAsync(DiffResult result, Dictionary<string, ResolvedBinding> bindings)
    {
        const string Trampoline = "__SCT__", Key = "__SCK__";
        if (result.Output is not { SymbolTable: { } table } output || output.FindSection(".static_call_sites") is not null)
            return;
        foreach (var reference in result.References.Where(r => r.TargetName.StartsWith(Trampoline, StringComparison.Ordinal)))
        {
            var key = Key + reference.TargetName[Trampoline.Length..];
            if (table.Symbols.Any(s => s.Name == key)) continue;
            table.Symbols.Add(new ElfSymbol(key)
            {
                Binding = ElfSymbolBinding.Global, Type = ElfSymbolType.NoType, SpecialSection = ElfSpecialSectionIndex.Undefined,
            });
            if (bindings.ContainsKey(key) || _exports.Find(key) is { Object: "vmlinux" }) continue;
            var resolved = new SymbolResolver(await ShippedAsync("vmlinux"), new ElfObject()).Resolve(key);
            bindings[key] = new ResolvedBinding(new KlpSymbolBinding(key, resolved.Object, resolved.Name, resolved.Sympos),
                new ManifestSymbol(resolved.Object, resolved.Name, resolved.Sympos.Value, resolved.Method.ToString(),
                    "static call key"));
        }
    }

    private static KlpCallbacks UnitCallbacks(IReadOnlyList<string> names, TranslationUnit unit)
    {
        var callbacks = KlpCallbacks.None;
        foreach (var name in names)
        {
            var match = CallbackName().Match(name);
            if (!match.Success)
                throw new LivepatchRefusedException($"{unit.SourcePath}: {name} is not a callback name this builder knows");
            string? Set(string? existing) => existing is null ? name
                : throw new LivepatchRefusedException($"{unit.SourcePath} has two {match.Groups["kind"].Value} callbacks " +
                    $"({existing} and {name}); a unit takes one of each kind: call both from one function");
            callbacks = match.Groups["kind"].Value switch
            {
                "pre_patch" => callbacks with { PrePatch = Set(callbacks.PrePatch) },
                "post_patch" => callbacks with { PostPatch = Set(callbacks.PostPatch) },
                "pre_unpatch" => callbacks with { PreUnpatch = Set(callbacks.PreUnpatch) },
                _ => callbacks with { PostUnpatch = Set(callbacks.PostUnpatch) },
            };
        }
        return callbacks;
    }

    [GeneratedRegex(@"^__kintsugi_callback_(?<kind>pre_patch|post_patch|pre_unpatch|post_unpatch)_.+$")]
    private static partial Regex CallbackName();
}
