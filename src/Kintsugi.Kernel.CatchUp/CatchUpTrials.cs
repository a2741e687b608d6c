using System.Collections.Concurrent;
using System.Diagnostics;
using Kintsugi.Kernel.Build;
using Kintsugi.Kernel.Build.Binding;
using Kintsugi.Kernel.Build.Phases;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Kernel.Build.Units;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>
/// The trials phase: each changed file the plan sends to the builder, taken through the builder's phases on its own
/// up to the resolved patch (no module is linked for a trial). A stable update sends hundreds of files, and one make
/// per file and side would spend most of the time reading kbuild's Makefiles, so the trials run as phases over all
/// files at once:
/// <list type="number">
/// <item>scope: each file's units (the builder's own unit selection);</item>
/// <item>precompile: the pristine "before" objects of every unit in one make, and the "after" objects of every C file
/// that is its own unit in one more, with all of those fixes applied in one view (a unit compiles only its own C
/// file, so each after object is the one its fix alone gives);</item>
/// <item>diff: each file's units compared (a file that was not precompiled compiles on its own here, which also
/// gives its compile error exactly);</item>
/// <item>originals: the distribution's objects of every unit that changes, in one make, for the fidelity proof;</item>
/// <item>resolve: each changed file's functions found and proven in the running kernel.</item>
/// </list>
/// Each outcome is kept in OUTPUT/.catch-up/trials as soon as it is known, so an interrupted or repeated run does
/// only what is left. Any make that fails in a batch only sends its files back to being compiled one by one.
/// </summary>
internal sealed class CatchUpTrials(BuildTarget target, KernelSourceTree tree, CatchUpRequest request, SourceDifference difference,
    string output, Action<string> progress)
{
    private readonly string _state = Path.Combine(output, ".catch-up", "trials");
    private readonly string _work = Path.Combine(output, ".catch-up", "work");
    private readonly Lazy<ModuleSymvers> _exports = new(target.LoadExports, LazyThreadSafetyMode.ExecutionAndPublication);
    private readonly ConcurrentDictionary<string, FileTrial> _results = new(StringComparer.Ordinal);
    private int _done;
    private int _total;

    /// <summary>A file whose units are known and compile, waiting for the next phase.</summary>
    private sealed record Scoped(ChangedFile File, string Key, BuildInputs Inputs, IReadOnlyList<TranslationUnit> Units);

    /// <summary>A file whose units changed: its diffs, waiting for the fidelity proof and resolution.</summary>
    private sealed record Diffed(Scoped File, IReadOnlyList<UnitDiff> Changed);


    public async Task<IReadOnlyDictionary<string, FileTrial>> RunAsync(IReadOnlyList<FileDecision.Build> decisions,
        Func<ChangedFile, string> keyOf, CancellationToken cancellation)
    {
        Directory.CreateDirectory(_state);
        _total = decisions.Count;
        var pending = new List<(ChangedFile File, string Key)>();
        foreach (var decision in decisions)
        {
            var key = keyOf(decision.File);
            if (Kept(key) is { } kept) _results[decision.File.Path] = kept;
            else pending.Add((decision.File, key));
        }
        _done = _results.Count;
        progress($"{_results.Count} file(s) tried by an earlier run (kept), {pending.Count} to try");
        if (pending.Count > 0)
        {
            var scoped = Scope(pending);
            var after = await PrecompileAsync(scoped, cancellation);
            var diffed = await DiffAsync(scoped, after, cancellation);
            await ResolveAsync(diffed, cancellation);
            // The batched after objects stay for the module build (ReusableAfterObjects); every other work file goes.
            if (Directory.Exists(_work))
                foreach (var work in Directory.EnumerateDirectories(_work).Where(d => Path.GetFileName(d) != "after"))
                    Directory.Delete(work, recursive: true);
        }
        return new Dictionary<string, FileTrial>(_results, StringComparer.Ordinal);
    }

    /// <summary>
    /// The after objects of the trials that the module build can take as they are, gathered in one directory: the unit
    /// of a file compiled in the shared make, unless another built file (a header, a C file #included into it) is
    /// compiled into that unit too, which the module's build applies and the shared make did not.
    /// </summary>
    public static (string Directory, int Units) ReusableAfterObjects(string output, KernelSourceTree tree,
        IReadOnlyList<(ChangedFile File, string Key)> built)
    {
        var after = Path.Combine(output, ".catch-up", "work", "after");
        var reusable = Path.Combine(output, ".catch-up", "work", "module-after");
        if (Directory.Exists(reusable)) Directory.Delete(reusable, recursive: true);
        var kbuild = KbuildUnits.Open(tree);
        var held = new List<(string Key, TranslationUnit Unit)>();
        var sharedUnits = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (file, key) in built)
        {
            if (file.Path.EndsWith(".c", StringComparison.Ordinal) && kbuild.Locate(file.Path) is { } own && own.SourcePath == file.Path
                && PristineObjectCache.HoldsAll(Path.Combine(after, key), [own]))
                held.Add((key, own));
            else
                sharedUnits.UnionWith(UnitsOf(kbuild, file.Path).Select(u => u.ObjectPath));
        }
        var reused = held.Where(h => !sharedUnits.Contains(h.Unit.ObjectPath)).ToList();
        foreach (var (key, unit) in reused) PristineObjectCache.CopyUnit(Path.Combine(after, key), reusable, unit.ObjectPath);
        return (reusable, reused.Count);
    }

    private static IReadOnlyList<TranslationUnit> UnitsOf(KbuildUnits kbuild, string path) =>
        (path.EndsWith(".h", StringComparison.Ordinal) ? kbuild.ResolveHeader(path, stopAtLimit: false).Resolution
            : kbuild.Resolve(path)) is UnitResolution.Built built ? built.Units : [];

    private List<Scoped> Scope(IReadOnlyList<(ChangedFile File, string Key)> pending)
    {
        var scoped = new List<Scoped>();
        foreach (var (file, key) in pending)
        {
            var outcome = Attempt(file, key, () =>
            {
                var inputs = BuildInputs.Read(new KernelBuildRequest(new TargetReference.Debian(request.Target), [difference.PatchPath(file)],
                    "catchup_trial", [], null, Path.Combine(_work, key), request.SkipFidelity, request.MaxUnits));
                var units = UnitSelection.Select(tree, inputs.Scope, request.MaxUnits, _ => { }).Units;
                if (units.Count == 0)
                    return new FileTrial(key, FileOutcome.NotBuilt, [], null, null, null, null,
                        "the builder's unit selection (kbuild Makefiles and .config, #include of C files) found no unit of this kernel for it");
                scoped.Add(new Scoped(file, key, inputs, units));
                return null;
            });
            if (outcome is not null) Finish(file, outcome);
        }
        return scoped;
    }

    /// <summary>
    /// The files (by key) whose after objects were compiled together, each in its own directory, and those whose unit
    /// did not compile there, each with its own compiler errors (the same as compiling it alone would give: the unit
    /// compiles its own C file only, against the kernel's own headers).
    /// </summary>
    private sealed record Precompiled(string Directory, IReadOnlySet<string> Files)
    {
        private const string ErrorFile = "compile-error.txt";

        public string? For(string key) => Files.Contains(key) ? Path.Combine(Directory, key) : null;

        public string? ErrorOf(string key) =>
            File.Exists(Path.Combine(Directory, key, ErrorFile)) ? File.ReadAllText(Path.Combine(Directory, key, ErrorFile)) : null;

        public void KeepError(string key, string errors) => AtomicFile.WriteText(Path.Combine(Directory, key, ErrorFile), errors);
    }

    private async Task<Precompiled> PrecompileAsync(IReadOnlyList<Scoped> scoped, CancellationToken cancellation)
    {
        var directory = Path.Combine(_work, "after");
        var units = scoped.SelectMany(s => s.Units).DistinctBy(u => u.ObjectPath).ToList();
        var watch = Stopwatch.StartNew();
        progress($"compiling the {units.Count} unit(s) of {scoped.Count} file(s) before the fixes, {UnitCompilation.PrecompileChunk} per make");
        var failed = await UnitCompilation.PrecompilePristineAsync(target, tree, units, originals: false, cancellation, progress);
        progress($"compiled before the fixes in {watch.Elapsed.TotalSeconds:0} s" +
            (failed.Count > 0 ? $"; {failed.Count} unit(s) did not compile and are tried one by one" : ""));

        // A unit's after object depends on its fix alone when the unit is the changed C file itself, and no other
        // file of the batch compiles into it.
        var byObject = scoped.SelectMany(s => s.Units.Select(u => (u.ObjectPath, s))).ToLookup(x => x.ObjectPath, x => x.s);
        var batch = scoped.Where(s => s.File.Path.EndsWith(".c", StringComparison.Ordinal) && s.Units.Count == 1
            && s.Units[0].SourcePath == s.File.Path && byObject[s.Units[0].ObjectPath].Count() == 1).ToList();
        // A unit that #includes another batched C file (a .c compiled on its own and also included elsewhere) would carry
        // both fixes: it compiles on its own instead.
        var batched = batch.Select(s => s.File.Path).ToHashSet(StringComparer.Ordinal);
        var includes = KbuildUnits.Open(tree).Includes;
        var carriesAnother = batch.SelectMany(s => includes.SourcesIncluding(s.File.Path).Where(i => i != s.File.Path && batched.Contains(i)))
            .ToHashSet(StringComparer.Ordinal);
        batch = [.. batch.Where(s => !carriesAnother.Contains(s.File.Path))];
        // An interrupted run's after objects are kept per file (the key names the fix, the kernel and the builder).
        var compiled = batch.Where(s => PristineObjectCache.HoldsAll(Path.Combine(directory, s.Key), s.Units)).Select(s => s.Key)
            .ToHashSet(StringComparer.Ordinal);
        var precompiled = new Precompiled(directory, compiled);
        var left = batch.Where(s => !compiled.Contains(s.Key) && precompiled.ErrorOf(s.Key) is null).ToList();
        if (left.Count < 2) return precompiled;
        watch.Restart();
        progress($"compiling the fixes of {left.Count} C file(s) together, {UnitCompilation.PrecompileChunk} per make" +
            (compiled.Count > 0 ? $" ({compiled.Count} compiled by an earlier run)" : ""));
        var notCompiled = 0;
        var tried = 0;
        foreach (var chunk in left.Chunk(UnitCompilation.PrecompileChunk))
        {
            var offset = tried;
            tried += chunk.Length;
            await using var patched = await BuildWorkspace.OpenAsync(tree, cancellation);
            var applied = new List<Scoped>();
            foreach (var file in chunk)
            {
                try
                {
                    foreach (var patch in file.Inputs.Patches) await patched.ApplyAsync(patch.Patch, cancellation);
                    applied.Add(file);
                }
                catch (SourcePatchException)
                {
                    // Tried on its own later, where the refusal says exactly what does not apply.
                }
            }
            if (applied.Count == 0)
            {
                notCompiled += chunk.Length;
                continue;
            }
            var chunkDirectory = Path.Combine(_work, "after-chunk");
            var failures = (await patched.CompileUnitsKeepGoingAsync([.. applied.Select(s => s.Units[0])], chunkDirectory,
                UnitCompilation.DiffCFlags(target), cancellation, CompileProgress.Every(left.Count, progress, offset)))
                .ToDictionary(f => f.Unit.ObjectPath, f => f.Errors, StringComparer.Ordinal);
            foreach (var file in applied)
            {
                if (!failures.TryGetValue(file.Units[0].ObjectPath, out var errors))
                {
                    PristineObjectCache.MoveUnit(chunkDirectory, Path.Combine(directory, file.Key), file.Units[0].ObjectPath);
                    compiled.Add(file.Key);
                }
                else if (errors is not null) precompiled.KeepError(file.Key, errors);
                else notCompiled++;
            }
            notCompiled += chunk.Length - applied.Count;
            Directory.Delete(chunkDirectory, recursive: true);
        }
        progress($"compiled after the fixes in {watch.Elapsed.TotalSeconds:0} s" +
            (notCompiled > 0 ? $"; {notCompiled} did not apply, or failed without telling why, and are tried one by one" : ""));
        return precompiled;
    }

    private async Task<List<Diffed>> DiffAsync(IReadOnlyList<Scoped> scoped, Precompiled after, CancellationToken cancellation)
    {
        var diffed = new ConcurrentBag<Diffed>();
        var objtoolAtLink = ReferenceBinder.ObjtoolRunsAtModuleLink(target.ModuleBuildDirectory);
        await Parallel.ForEachAsync(scoped, Options(cancellation), async (file, token) =>
        {
            var outcome = await AttemptAsync(file.File, file.Key, async () =>
            {
                if (after.ErrorOf(file.Key) is { } errors) throw new ModuleBuildException(errors);
                var compiled = await UnitCompilation.CompileAsync(target, tree, file.Units, file.Inputs.Patches,
                    Path.Combine(_work, file.Key), new StageClock(_ => { }), token,
                    precompiledAfter: after.For(file.Key));
                var diffs = UnitDiffing.DiffAll(compiled, _exports, objtoolAtLink);
                UnitDiffing.ThrowIfRefused(diffs);
                var changed = diffs.Where(d => d.Contributes).ToList();
                if (changed.Count == 0)
                    return new FileTrial(file.Key, FileOutcome.NoCode, [], null, null, null, null,
                        $"compiled before and after ({string.Join(", ", file.Units.Select(u => u.ObjectPath))}): the machine code is the same" +
                        string.Concat(diffs.SelectMany(d => d.Notes).Select(n => "; " + n)));
                diffed.Add(new Diffed(file, changed));
                return null;
            });
            if (outcome is not null) Finish(file.File, outcome);
        });
        return [.. diffed];
    }

    private async Task ResolveAsync(IReadOnlyList<Diffed> diffed, CancellationToken cancellation)
    {
        if (diffed.Count == 0) return;
        var units = diffed.SelectMany(d => d.Changed.Select(c => c.Unit)).DistinctBy(u => u.ObjectPath).ToList();
        var watch = Stopwatch.StartNew();
        progress($"compiling the {units.Count} changed unit(s) as the distribution did, for the fidelity proof, in one make");
        var failed = await UnitCompilation.PrecompilePristineAsync(target, tree, units, originals: true, cancellation, progress);
        progress($"compiled the originals in {watch.Elapsed.TotalSeconds:0} s" +
            (failed.Count > 0 ? $"; {failed.Count} unit(s) did not compile and are tried one by one" : ""));
        await Parallel.ForEachAsync(diffed, Options(cancellation), async (file, token) =>
        {
            var outcome = await AttemptAsync(file.File.File, file.File.Key, async () =>
            {
                await UnitCompilation.CompileOriginalsAsync(target, tree, file.Changed.Select(c => c.Unit), new StageClock(_ => { }), token);
                var resolved = await PatchResolution.ResolveAsync(target, file.Changed, _exports.Value, request.SkipFidelity, _ => { }, token);
                resolved.ThrowIfUnfaithful(request.SkipFidelity);
                // New functions alone change nothing the running kernel does: a CVE must not count as covered by them.
                if (resolved.Functions.Count == 0)
                    return new FileTrial(file.File.Key, FileOutcome.Refused, [], null, "new-code-only",
                        "it replaces no function of the running kernel, it only adds code" +
                        (file.File.File.Functions.Count > 0 ? $" ({string.Join(", ", file.File.File.Functions)})" : "") +
                        " that takes effect through callers in other changed files",
                        "it can only be live patched together with the changes that call it: reboot into the new version", null);
                return new FileTrial(file.File.Key, FileOutcome.Built, [.. resolved.Functions.Select(f => $"{f.Object}:{f.Record.Name}")],
                    string.Join(", ", resolved.Functions.Select(f => f.Object).Distinct()), null, null, null, null);
            });
            Finish(file.File.File, outcome!);
        });
    }

    private static ParallelOptions Options(CancellationToken cancellation) =>
        new() { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = cancellation };

    private FileTrial? Attempt(ChangedFile file, string key, Func<FileTrial?> work) =>
        AttemptAsync(file, key, () => Task.FromResult(work())).GetAwaiter().GetResult();

    /// <summary>A refusal of the builder is the file's outcome; anything else is a bug and stops the run.</summary>
    private static async Task<FileTrial?> AttemptAsync(ChangedFile file, string key, Func<Task<FileTrial?>> work)
    {
        try
        {
            return await work();
        }
        catch (LivepatchRefusedException e)
        {
            var rules = e.Rules.Count > 0 ? string.Join(", ", e.Rules) : "livepatch";
            return new FileTrial(key, FileOutcome.Refused, [], null, rules, e.Message,
                "reboot into the new version, or rewrite the fix as the reason says", null);
        }
        catch (SourcePatchException e)
        {
            return new FileTrial(key, FileOutcome.Refused, [], null, "patch", e.Message, "reboot into the new version", null);
        }
        catch (ModuleBuildException e)
        {
            return new FileTrial(key, FileOutcome.Refused, [], null, "build", e.Message,
                "the change does not build on its own against this kernel's source (it may need another change of the update, " +
                "such as a header): reboot into the new version", null);
        }
    }

    private FileTrial? Kept(string key)
    {
        var record = Path.Combine(_state, key + ".json");
        return File.Exists(record)
            && System.Text.Json.JsonSerializer.Deserialize(File.ReadAllBytes(record), CatchUpJson.Default.FileTrial) is { } kept
            && kept.Key == key ? kept : null;
    }

    /// <summary>Keeps the outcome on disk at once (an interrupted run loses no finished file) and reports it.</summary>
    private void Finish(ChangedFile file, FileTrial trial)
    {
        var record = Path.Combine(_state, trial.Key + ".json");
        AtomicFile.Write(record, System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(trial, CatchUpJson.Default.FileTrial));
        _results[file.Path] = trial;
        progress($"[{Interlocked.Increment(ref _done)}/{_total}] {file.Path}: {Describe(trial)}");
    }

    private static string Describe(FileTrial trial) => trial.Outcome switch
    {
        FileOutcome.Built => $"built ({string.Join(", ", trial.Functions)})",
        FileOutcome.Refused => $"refused ({trial.Rule})",
        FileOutcome.NoCode => "changes no code",
        _ => "not built in this kernel",
    };
}
