using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;
using Kintsugi.Diff;
using Kintsugi.Elf;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Livepatch;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Kernel.Build.Units;
using Kintsugi.Lab;

namespace Kintsugi.Kernel.Build;

/// <summary>Which kernel to build for: a Debian release from the archive, or a generic target directory.</summary>
public abstract record TargetReference
{
    public sealed record Debian(KernelRelease Release) : TargetReference
    {
        public override string ToString() => Release.Value;
    }

    public sealed record TargetDirectory(string Path) : TargetReference
    {
        public override string ToString() => Path;
    }
}

/// <summary>What to build: fixes for one exact kernel, optionally on top of an earlier level.</summary>
/// <param name="BaseDirectory">The output directory of the previous level; its patches are carried forward.</param>
/// <param name="MaxUnits">A header fix rebuilding more units than this is refused with the list.</param>
/// <param name="Signing">The operator's key: the module is signed in the kernel's module signature format.</param>
public sealed record KernelBuildRequest(
    TargetReference Target,
    IReadOnlyList<string> PatchFiles,
    string? Name,
    IReadOnlyList<string> Cves,
    string? BaseDirectory,
    string OutputDirectory,
    bool SkipFidelity = false,
    int MaxUnits = 40,
    ModuleSigningKey? Signing = null);

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<BuildOutcome>))]
public enum BuildOutcome { Built, NothingToDo }

public sealed record StageTiming(string Stage, double Seconds);

public sealed record KernelBuildResult(BuildOutcome Outcome, string? Module, string? ManifestPath, BuildManifest? Manifest, string Message, IReadOnlyList<StageTiming> Stages);

/// <summary>The fix cannot be live patched as written; the message lists every reason and what to do.</summary>
/// <param name="rules">The differ's rules behind the refusal, when the differ refused it (empty for a refusal from the fix's files or scope).</param>
public sealed class LivepatchRefusedException(string message, IReadOnlyList<RefusalRule>? rules = null, Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.InputRefused;

    public IReadOnlyList<RefusalRule> Rules { get; } = rules ?? [];
}

/// <summary>
/// From source fixes to a proven livepatch module for one exact distribution kernel: fetch and prepare the
/// kernel's own source once, compile only the units the fixes touch (as the distribution did, to prove the
/// build reproduces the shipped code; and before and after the fix, one section per function, for the
/// differ), resolve every reference the new code makes into the running kernel, and link the module.
/// </summary>
public sealed partial class KernelPatchBuilder(DebianKernelArchive archive, Func<LabMachine> lab, Action<string> progress)
{
    private const string DiffFlags = "-ffunction-sections -fdata-sections";

    public static string BuilderVersion =>
        typeof(KernelPatchBuilder).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    public async Task<KernelBuildResult> BuildAsync(KernelBuildRequest request, CancellationToken cancellation = default)
    {
        var clock = new StageClock(progress);

        // Everything that can be refused from the inputs alone is refused before anything is downloaded.
        var basis = request.BaseDirectory is { } baseDirectory ? ReadBase(baseDirectory) : null;
        var level = (basis?.Manifest.Level ?? 0) + 1;
        var name = ModuleBaseName(request.Name ?? basis?.Manifest.Name ?? Path.GetFileNameWithoutExtension(request.PatchFiles.FirstOrDefault() ?? "livepatch"));
        var added = request.PatchFiles.Select(SourcePatch.Read).ToList();
        if (added.Count == 0) throw new SourcePatchException("no patch given: pass at least one --patch");
        var patches = (basis?.Patches ?? []).Concat(added.Select(p => (Patch: p, Level: level))).ToList();
        var scoped = LivepatchScope.Check(patches.Select(p => p.Patch));
        var signer = request.Signing?.Describe();

        var target = await clock.RunAsync("download", async () => request.Target switch
        {
            TargetReference.Debian debian => (BuildTarget)await DebianBuildTarget.FetchAsync(archive, debian.Release, lab, cancellation),
            TargetReference.TargetDirectory directory => await DirectoryBuildTarget.OpenAsync(directory.Path, cancellation),
            _ => throw new ArgumentException($"unknown target {request.Target}"),
        });
        var kernel = target.Target;
        if (basis is not null && basis.Manifest.Target.BuildId != kernel.BuildId.ToString())
            throw new ModuleBuildException($"--base was built for {basis.Manifest.Target.Release} (build-id {basis.Manifest.Target.BuildId}), not for {kernel}");
        var tree = await clock.RunAsync("prepare", () => target.PrepareAsync(progress, cancellation));

        var (units, notBuilt) = clock.Run("scope", () => UnitsOf(tree, scoped, request.MaxUnits));
        if (units.Count == 0)
            return NothingToDo(clock, "none of the changed files is built into this kernel's configuration: there is nothing to live patch\n"
                + string.Join('\n', notBuilt.Select(n => "  " + n)));

        var work = Path.Combine(Path.GetFullPath(request.OutputDirectory), ".work");
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        // The compatibility headers live at a fixed place per kernel so that the flags, and with them the
        // cached pristine objects, stay the same from one build to the next.
        var kernelDirectory = target.CacheDirectory;
        var compat = Path.Combine(kernelDirectory, "kintsugi-include");
        WriteCompatibilityHeaders(compat);
        var flags = $"{DiffFlags} -I{compat}";
        var objects = units.Select(u => u.ObjectPath).ToList();
        var original = new PristineObjects(Path.Combine(kernelDirectory, "objects", "original"));
        var before = new PristineObjects(Path.Combine(kernelDirectory, "objects", "before"));

        // The fixes are applied first, in their own view of the tree, so a fix that does not apply fails fast.
        await using (var patched = await BuildWorkspace.OpenAsync(tree, cancellation))
        {
            await clock.RunAsync("apply", async () => { foreach (var (patch, _) in patches) await patched.ApplyAsync(patch, cancellation); });
            if (original.Missing(objects).Count > 0 || before.Missing(objects).Count > 0)
            {
                await using var pristine = await BuildWorkspace.OpenAsync(tree, cancellation);
                if (original.Missing(objects) is { Count: > 0 } missingOriginal)
                    await clock.RunAsync("compile original", () => original.CompileAsync(pristine, missingOriginal, extraCFlags: null, cancellation));
                if (before.Missing(objects) is { Count: > 0 } missingBefore)
                    await clock.RunAsync("compile before", () => before.CompileAsync(pristine, missingBefore, flags, cancellation));
            }
            await clock.RunAsync("compile after", () => patched.CompileAllAsync(objects, Path.Combine(work, "after"), flags, cancellation));
        }
        original.CopyTo(objects, Path.Combine(work, "original"));
        before.CopyTo(objects, Path.Combine(work, "before"));
        clock.Run("symbol versions", () => { ExportedSymbolVersions.Check(units, Path.Combine(work, "before"), Path.Combine(work, "after")); return 0; });

        // Module units need the exports to tell their own static keys from linked ones; a fix of vmlinux alone that changes nothing needs no Module.symvers.
        var moduleExports = new Lazy<ModuleSymvers>(target.LoadExports);
        var diffs = clock.Run("diff", () => units.Select((unit, i) =>
        {
            var options = new DiffOptions(PatchedObjectName.Parse(unit.PatchedObject), $"kintsugi_u{i}_");
            if (!unit.IsVmlinux) options = options with { LinkedByModuleLoader = moduleExports.Value.LinkedFor(unit.PatchedObject) };
            return (Unit: unit, Result: ObjectDiffer.Diff(
                ElfObject.Load(Path.Combine(work, "before", unit.ObjectPath)), ElfObject.Load(Path.Combine(work, "after", unit.ObjectPath)), options));
        }).ToList());
        var refusals = diffs.SelectMany(d => d.Result.Refusals.Select(r => $"  {d.Unit.SourcePath}: {r.Symbol}: {r.Message}")).ToList();
        if (refusals.Count > 0)
            throw new LivepatchRefusedException($"this fix cannot be live patched safely:\n{string.Join('\n', refusals)}",
                [.. diffs.SelectMany(d => d.Result.Refusals.Select(r => r.Rule)).Distinct()]);
        var changed = diffs.Where(d => d.Result.HasChanges || d.Result.Callbacks.Count > 0).ToList();
        if (changed.Count == 0)
        {
            var notes = diffs.SelectMany(d => d.Result.Functions.Where(f => f.Note is not null).Select(f => $"  {d.Unit.SourcePath}: {f.Name}: {f.Note}")).ToList();
            return NothingToDo(clock, "the fix changes no machine code of this kernel: there is nothing to live patch" + (notes.Count > 0 ? "\n" + string.Join('\n', notes) : ""));
        }

        var exports = moduleExports.Value;
        var shipped = new Dictionary<string, ShippedObject>(StringComparer.Ordinal);
        async Task<ShippedObject> ShippedAsync(string objectName)
        {
            if (!shipped.TryGetValue(objectName, out var found))
                shipped[objectName] = found = objectName == "vmlinux" ? await target.VmlinuxAsync(progress, cancellation) : await target.ModuleAsync(objectName, cancellation);
            return found;
        }

        var functions = new List<(string Object, KlpFunction Function, ManifestFunction Record)>();
        var callbacks = new Dictionary<string, List<KlpCallbacks>>(StringComparer.Ordinal);
        var bindings = new Dictionary<string, (KlpSymbolBinding Binding, ManifestSymbol Record)>(StringComparer.Ordinal);
        var mismatches = new List<string>();
        var matched = 0;
        await clock.RunAsync("resolve", async () =>
        {
            foreach (var (unit, result) in changed)
            {
                var target = await ShippedAsync(unit.PatchedObject);
                var resolver = new SymbolResolver(target, ElfObject.Load(Path.Combine(work, "original", unit.ObjectPath)));
                foreach (var function in result.Functions.Where(f => f.Kind == FunctionChange.Changed))
                {
                    var resolved = resolver.ResolveFunction(function.Name, out var mismatch);
                    if (resolved is null)
                    {
                        mismatches.Add($"{unit.SourcePath}: {mismatch}");
                        if (!request.SkipFidelity) continue;
                        resolved = resolver.Resolve(function.Name);
                    }
                    else matched++;
                    functions.Add((unit.PatchedObject, new KlpFunction(function.Name, resolved.Sympos, function.OutputSymbol!),
                        new ManifestFunction(unit.PatchedObject, function.Name, resolved.Sympos.Value, resolved.Method.ToString(), unit.SourcePath)));
                }
                foreach (var reference in result.References)
                {
                    if (bindings.ContainsKey(reference.OutputName)) continue;
                    if (await BindingForAsync(unit, reference, resolver, exports, ShippedAsync) is { } binding)
                        bindings[reference.OutputName] = binding;
                }
                await NameStaticCallKeysAsync(result, exports, bindings, ShippedAsync);
                // Each unit's callbacks stay its own: the module chains those of several units of one object.
                if (WithCallbacks(KlpCallbacks.None, result.Callbacks, unit) is { Any: true } unitCallbacks)
                {
                    if (!callbacks.TryGetValue(unit.PatchedObject, out var list)) callbacks[unit.PatchedObject] = list = [];
                    list.Add(unitCallbacks);
                }
            }
        });
        if (mismatches.Count > 0 && !request.SkipFidelity)
            throw new ModuleBuildException("fidelity proof failed: the prepared source does not reproduce the running kernel's code, so a patch built from it could be wrong:\n"
                + string.Join('\n', mismatches.Select(m => "  " + m)) + "\nCheck that the target is the kernel the source belongs to; --skip-fidelity builds anyway (not recommended).");

        var output = Path.GetFullPath(request.OutputDirectory);
        var patchesDirectory = Path.Combine(output, "patches");
        Directory.CreateDirectory(patchesDirectory);
        var manifestPatches = new List<ManifestPatch>();
        for (var i = 0; i < patches.Count; i++)
        {
            var (patch, patchLevel) = patches[i];
            var file = Path.Combine("patches", $"{i + 1:D3}-{SafeFileName(patch.Name)}");
            await File.WriteAllTextAsync(Path.Combine(output, file), patch.Text, cancellation);
            manifestPatches.Add(new ManifestPatch(patch.Name, patch.Sha256, patch.Subject, file, patchLevel));
        }
        var moduleName = $"{name}_{level}";
        var cves = (basis?.Manifest.Cves ?? []).Concat(request.Cves).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        var manifest = new BuildManifest(BuildManifest.CurrentFormat, moduleName, name, level,
            new ManifestTarget(kernel.Release.Value, kernel.PackageVersion, kernel.BuildId.ToString()),
            manifestPatches, cves,
            changed.Select(d => new ManifestUnit(d.Unit.SourcePath, d.Unit.ObjectPath, d.Unit.PatchedObject,
                [.. d.Result.Functions.Where(f => f.Kind == FunctionChange.Changed).Select(f => f.Name)],
                [.. d.Result.Functions.Where(f => f.Kind == FunctionChange.New).Select(f => f.Name)])).ToList(),
            functions.Select(f => f.Record).ToList(),
            bindings.Values.Select(b => b.Record).OrderBy(r => r.Object, StringComparer.Ordinal).ThenBy(r => r.Name, StringComparer.Ordinal).ToList(),
            new ManifestFidelity(!request.SkipFidelity, matched, mismatches),
            BuilderVersion, DateTimeOffset.UtcNow, signer);

        var diffObjects = new List<string>();
        for (var i = 0; i < changed.Count; i++)
        {
            var path = Path.Combine(work, "diff", $"unit{i}.o");
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            changed[i].Result.Output!.Save(path);
            diffObjects.Add(path);
        }
        var klpObjects = changed.Select(d => d.Unit.PatchedObject).Distinct(StringComparer.Ordinal)
            .OrderBy(o => o == "vmlinux" ? 0 : 1).ThenBy(o => o, StringComparer.Ordinal)
            .Select(o => new KlpObject(o, functions.Where(f => f.Object == o).Select(f => f.Function).ToList(), (IReadOnlyList<KlpCallbacks>?)callbacks.GetValueOrDefault(o) ?? []))
            .ToList();
        var spec = new LivepatchModuleSpec(moduleName, $"Kintsugi livepatch {name} level {level} for {kernel.Release}" + (cves.Count > 0 ? $" ({string.Join(", ", cves)})" : ""),
            klpObjects, diffObjects, bindings.Values.Select(b => b.Binding).ToList(), manifest.ToUtf8(),
            EffectiveVersion: kernel.PackageVersion is { } version ? $"{version}+kintsugi{level}" : null);
        var built = await clock.RunAsync("link", () => LivepatchModuleBuilder.BuildAsync(kernel, target.ModuleBuildDirectory, spec, exports, Path.Combine(work, "module"), cancellation));

        if (request.Signing is { } signing)
            await clock.RunAsync("sign", () => ModuleSigner.SignAsync(built, signing, [tree.Directory, target.ModuleBuildDirectory], cancellation));
        var module = Path.Combine(output, moduleName + ".ko");
        File.Copy(built, module, overwrite: true);
        var manifestPath = Path.Combine(output, "manifest.json");
        await File.WriteAllBytesAsync(manifestPath, manifest.ToUtf8(), cancellation);
        Directory.Delete(work, recursive: true);
        var summary = $"{moduleName}.ko: {functions.Count} function(s) replaced in {string.Join(", ", klpObjects.Select(o => o.Name))}, {bindings.Count} symbol(s) bound at load time";
        return new KernelBuildResult(BuildOutcome.Built, module, manifestPath, manifest, summary, clock.Stages);
    }

    /// <summary>
    /// Objects compiled from the unpatched prepared tree: the same for every build against this kernel, so
    /// they are kept, and a second fix to the same units compiles only the patched side.
    /// </summary>
    private sealed class PristineObjects(string directory)
    {
        // An object cached before its command file (and symbol versions) were kept is compiled again once.
        public IReadOnlyList<string> Missing(IEnumerable<string> objects) =>
            [.. objects.Where(o => !File.Exists(Path.Combine(directory, o)) || !File.Exists(Path.Combine(directory, ExportedSymbolVersions.CommandFile(o))))];

        public async Task CompileAsync(BuildWorkspace workspace, IReadOnlyList<string> objects, string? extraCFlags, CancellationToken cancellation)
        {
            // Compiled beside the cache and moved in, so a build killed midway never leaves a half-written object to be trusted later.
            var staging = directory + ".staging-" + Environment.ProcessId;
            await workspace.CompileAllAsync(objects, staging, extraCFlags, cancellation);
            foreach (var o in objects)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(directory, o))!);
                if (File.Exists(Path.Combine(staging, ExportedSymbolVersions.CommandFile(o))))
                    File.Move(Path.Combine(staging, ExportedSymbolVersions.CommandFile(o)), Path.Combine(directory, ExportedSymbolVersions.CommandFile(o)), overwrite: true);
                File.Move(Path.Combine(staging, o), Path.Combine(directory, o), overwrite: true);
            }
            Directory.Delete(staging, recursive: true);
        }

        public void CopyTo(IEnumerable<string> objects, string destination)
        {
            foreach (var o in objects)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(destination, o))!);
                File.Copy(Path.Combine(directory, o), Path.Combine(destination, o), overwrite: true);
                if (File.Exists(Path.Combine(directory, ExportedSymbolVersions.CommandFile(o))))
                    File.Copy(Path.Combine(directory, ExportedSymbolVersions.CommandFile(o)), Path.Combine(destination, ExportedSymbolVersions.CommandFile(o)), overwrite: true);
            }
        }
    }

    private sealed record Base(BuildManifest Manifest, IReadOnlyList<(SourcePatch Patch, int Level)> Patches);

    private static Base ReadBase(string directory)
    {
        var manifest = BuildManifest.Read(Path.Combine(directory, "manifest.json"));
        var patches = manifest.Patches.Select(p =>
        {
            var patch = SourcePatch.Read(Path.Combine(directory, p.File));
            if (patch.Sha256 != p.Sha256)
                throw new ModuleBuildException($"{Path.Combine(directory, p.File)} was changed after level {manifest.Level} was built (sha256 {patch.Sha256}, manifest says {p.Sha256})");
            return (patch, p.Level);
        }).ToList();
        return new Base(manifest, patches);
    }

    /// <summary>The units the fixes touch, and the proof for each changed C file that this kernel does not build.</summary>
    private (IReadOnlyList<TranslationUnit> Units, IReadOnlyList<UnitResolution.NotBuilt> NotBuilt) UnitsOf(
        KernelSourceTree tree, IReadOnlyList<ScopedChange> scoped, int maxUnits)
    {
        var kbuild = KbuildUnits.Open(tree.Directory);
        var units = new SortedDictionary<string, TranslationUnit>(StringComparer.Ordinal);
        var notBuilt = new List<UnitResolution.NotBuilt>();
        HeaderDependents? headers = null;
        foreach (var change in scoped)
        {
            switch (change.Scope)
            {
                case ChangeScope.TranslationUnit:
                    if (change.Change.Kind == FileChangeKind.Added)
                        throw new LivepatchRefusedException($"{change.Change.Path} is a new C file: a livepatch replaces functions of units the kernel already has; put the new code into the unit that calls it");
                    switch (kbuild.Resolve(change.Change.Path))
                    {
                        case UnitResolution.Built located:
                            if (located.Units.Any(u => u.SourcePath != change.Change.Path))
                                progress($"{change.Change.Path} is compiled as part of {string.Join(", ", located.Units.Select(u => u.SourcePath))}");
                            foreach (var unit in located.Units) units[unit.SourcePath] = unit;
                            break;
                        case UnitResolution.NotBuilt proven:
                            progress(proven.ToString());
                            notBuilt.Add(proven);
                            break;
                        case UnitResolution.Unresolved unresolved:
                            throw new LivepatchRefusedException($"{unresolved}. A fix is never skipped on a guess: check where kbuild builds the file, " +
                                "or drop the file from the fix if this kernel does not build it");
                    }
                    break;
                case ChangeScope.Header:
                    headers ??= HeaderDependents.Scan(tree.Directory);
                    var sources = headers.SourcesIncluding(change.Change.Path);
                    var built = sources.AsParallel().AsOrdered().WithDegreeOfParallelism(Environment.ProcessorCount)
                        .Select(kbuild.Locate).OfType<TranslationUnit>().ToList();
                    progress($"{change.Change.Path} is included by {sources.Count} C file(s), {built.Count} of them built into this kernel");
                    foreach (var including in built) units[including.SourcePath] = including;
                    break;
            }
        }
        if (units.Count > maxUnits)
            throw new LivepatchRefusedException($"the fix changes code included by {units.Count} translation units (more than {maxUnits}); rebuilding them all is not a reasonable livepatch. " +
                "Move the change out of the header into the functions that need it, or raise --max-units. The units:\n" + string.Join('\n', units.Keys.Select(u => "  " + u)));
        return ([.. units.Values], notBuilt);
    }

    private static async Task<(KlpSymbolBinding, ManifestSymbol)?> BindingForAsync(TranslationUnit unit, LoadTimeReference reference, SymbolResolver resolver,
        ModuleSymvers exports, Func<string, Task<ShippedObject>> shippedAsync)
    {
        static (KlpSymbolBinding, ManifestSymbol) Bind(LoadTimeReference reference, ResolvedSymbol resolved, string how) =>
            (new KlpSymbolBinding(reference.OutputName, resolved.Object, resolved.Name, resolved.Sympos),
             new ManifestSymbol(resolved.Object, resolved.Name, resolved.Sympos.Value, resolved.Method.ToString(), how));

        if (reference.DefinedInUnit && reference.IsLocal)
            return Bind(reference, resolver.Resolve(reference.TargetName), "local");
        var export = exports.Find(reference.TargetName);
        // The module loader links exports, except those of the patched module itself, which may load after the patch.
        if (export is not null && (export.Object == "vmlinux" || export.Object != unit.PatchedObject)) return null;
        if (reference.DefinedInUnit || export is not null)
            return Bind(reference, resolver.Resolve(reference.TargetName), export is null ? "unexported" : "export of the patched module");
        // Defined in another unit and not exported: it lives in the patched object, or (for module code) possibly in vmlinux.
        var own = await shippedAsync(unit.PatchedObject);
        if (own.Symbols.Named(reference.TargetName).Count > 0)
            return Bind(reference, new SymbolResolver(own, new ElfObject()).Resolve(reference.TargetName), "unexported");
        if (!unit.IsVmlinux)
        {
            var vmlinux = await shippedAsync("vmlinux");
            if (vmlinux.Symbols.Named(reference.TargetName).Count > 0)
                return Bind(reference, new SymbolResolver(vmlinux, new ElfObject()).Resolve(reference.TargetName), "unexported");
        }
        throw new LivepatchRefusedException($"{unit.SourcePath}: the fixed code references {reference.TargetName}, which the running kernel neither exports nor has in {unit.PatchedObject}; " +
            "it may be new in the fix's kernel version: backport it into the patched unit as a static function");
    }

    /// <summary>
    /// Where objtool runs only when a module is linked (IBT kernels), it writes the patch module's static call
    /// sites then; for a key it cannot find in the module it records the trampoline instead, which the kernel
    /// accepts only for exported static calls ("Failed to fixup __raw_static_call() usage"). Naming each
    /// called trampoline's key as an undefined symbol of the diff object lets objtool record the key itself,
    /// bound by livepatch like any other unexported symbol of vmlinux.
    /// </summary>
    private static async Task NameStaticCallKeysAsync(DiffResult result, ModuleSymvers exports,
        Dictionary<string, (KlpSymbolBinding Binding, ManifestSymbol Record)> bindings, Func<string, Task<ShippedObject>> shippedAsync)
    {
        const string Trampoline = "__SCT__", Key = "__SCK__";
        if (result.Output is not { SymbolTable: { } table } output || output.FindSection(".static_call_sites") is not null) return;
        foreach (var reference in result.References.Where(r => r.TargetName.StartsWith(Trampoline, StringComparison.Ordinal)))
        {
            var key = Key + reference.TargetName[Trampoline.Length..];
            if (table.Symbols.Any(s => s.Name == key)) continue;
            table.Symbols.Add(new ElfSymbol(key) { Binding = ElfSymbolBinding.Global, Type = ElfSymbolType.NoType, SpecialSection = ElfSpecialSectionIndex.Undefined });
            if (bindings.ContainsKey(key) || exports.Find(key) is { Object: "vmlinux" }) continue;
            var resolved = new SymbolResolver(await shippedAsync("vmlinux"), new ElfObject()).Resolve(key);
            bindings[key] = (new KlpSymbolBinding(key, resolved.Object, resolved.Name, resolved.Sympos),
                new ManifestSymbol(resolved.Object, resolved.Name, resolved.Sympos.Value, resolved.Method.ToString(), "static call key"));
        }
    }

    private static KlpCallbacks WithCallbacks(KlpCallbacks callbacks, IReadOnlyList<string> names, TranslationUnit unit)
    {
        foreach (var name in names)
        {
            var match = CallbackName().Match(name);
            if (!match.Success) throw new LivepatchRefusedException($"{unit.SourcePath}: {name} is not a callback name this builder knows");
            string? Set(string? existing) => existing is null ? name
                : throw new LivepatchRefusedException($"{unit.SourcePath} has two {match.Groups["kind"].Value} callbacks ({existing} and {name}); a unit takes one of each kind: call both from one function");
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

    private static void WriteCompatibilityHeaders(string directory)
    {
        Directory.CreateDirectory(directory);
        var assembly = typeof(KernelPatchBuilder).Assembly;
        foreach (var header in new[] { "kpatch-macros.h", "kpatch-syscall.h" })
        {
            using var stream = assembly.GetManifestResourceStream($"Kintsugi.Kernel.Build.Compat.{header}")
                ?? throw new InvalidOperationException($"the builder was built without its {header} resource");
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            var path = Path.Combine(directory, header);
            // Rewriting an unchanged header would only make kbuild think every cached object is stale.
            if (File.Exists(path) && File.ReadAllBytes(path).AsSpan().SequenceEqual(memory.ToArray())) continue;
            File.WriteAllBytes(path + ".new", memory.ToArray());
            File.Move(path + ".new", path, overwrite: true);
        }
    }

    private KernelBuildResult NothingToDo(StageClock clock, string message) => new(BuildOutcome.NothingToDo, null, null, null, message, clock.Stages);

    /// <summary>Module names are C identifiers of at most 55 characters with the level appended.</summary>
    private static string ModuleBaseName(string name)
    {
        var safe = Regex.Replace(name.ToLowerInvariant(), "[^a-z0-9_]", "_").Trim('_');
        if (safe.Length == 0 || char.IsAsciiDigit(safe[0])) safe = "livepatch_" + safe;
        return safe.Length > 48 ? safe[..48] : safe;
    }

    private static string SafeFileName(string name) => Regex.Replace(Path.GetFileName(name), "[^A-Za-z0-9._-]", "_");

    [GeneratedRegex(@"^__kintsugi_callback_(?<kind>pre_patch|post_patch|pre_unpatch|post_unpatch)_.+$")]
    private static partial Regex CallbackName();

    /// <summary>Times each stage and reports it as it starts and ends: the benchmark's breakdown and the user's progress.</summary>
    private sealed class StageClock(Action<string> progress)
    {
        private readonly List<StageTiming> _stages = [];
        public IReadOnlyList<StageTiming> Stages => _stages;

        public T Run<T>(string stage, Func<T> work) => RunAsync(stage, () => Task.FromResult(work())).GetAwaiter().GetResult();

        public async Task RunAsync(string stage, Func<Task> work) => await RunAsync(stage, async () => { await work(); return 0; });

        public async Task<T> RunAsync<T>(string stage, Func<Task<T>> work)
        {
            progress($"{stage}...");
            var watch = Stopwatch.StartNew();
            var result = await work();
            _stages.Add(new StageTiming(stage, Math.Round(watch.Elapsed.TotalSeconds, 2)));
            progress($"{stage}: done in {watch.Elapsed.TotalSeconds:0.0} s");
            return result;
        }
    }
}
