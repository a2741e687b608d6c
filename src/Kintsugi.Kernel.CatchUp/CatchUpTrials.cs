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
/// <item>after: the fixes of every C file that is its own unit compiled together, in shared makes, with all of those
/// fixes applied in one view (a unit compiles only its own C file, so each after object is the one its fix alone
/// gives), keeping each one's compiler errors;</item>
/// <item>headers: the C files whose fix did not compile against the running kernel's headers, compiled again with
/// the update's header changes that only add (the fix is built with those companions), and the rest with every header
/// change, which tells a fix that needs a changed layout or signature (refused, naming the header) from one that
/// needs another C file's change;</item>
/// <item>before: the pristine objects of the units of every file still in the running, in shared makes (a fix that
/// does not compile costs no before side);</item>
/// <item>diff: each file's units compared (a file that was not compiled in a shared make compiles on its own here,
/// which also gives its compile error exactly, and then gets the same second chance with the headers);</item>
/// <item>resolve: each changed file's functions found and proven in the running kernel with the before objects, and
/// where those cannot decide, with the units compiled as the distribution did (in one make for all such files).</item>
/// </list>
/// Each outcome is kept in OUTPUT/.catch-up/trials as soon as it is known, so an interrupted or repeated run does
/// only what is left. Any make that fails in a batch only sends its files back to being compiled one by one.
/// </summary>
internal sealed partial class CatchUpTrials(BuildTarget target, KernelSourceTree tree, CatchUpRequest request,
    SourceDifference difference, string output, Action<string> progress)
{
    private readonly string _state = Path.Combine(output, ".catch-up", "trials");
    private readonly string _work = Path.Combine(output, ".catch-up", "work");
    private readonly Lazy<ModuleSymvers> _exports = new(target.LoadExports,
        LazyThreadSafetyMode.ExecutionAndPublication);
    private readonly ConcurrentDictionary<string, FileTrial> _results = new(StringComparer.Ordinal);
    private int _done;
    private int _total;

    /// <summary>A file whose units are known and compile, waiting for the next phase.</summary>
    private sealed record Scoped(ChangedFile File, string Key, BuildInputs Inputs,
        IReadOnlyList<TranslationUnit> Units);

    /// <summary>A file whose units changed: its diffs, waiting for the fidelity proof and resolution.</summary>
    /// <param name="Companions">Changed headers whose additions the fix was compiled with.</param>
    private sealed record Diffed(Scoped File, IReadOnlyList<UnitDiff> Changed, IReadOnlyList<string> Companions);

    /// <summary>A C file whose fix did not compile in the shared make against the running kernel's headers.</summary>
    private sealed record Uncompiled(Scoped File, string Errors);


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
            var after = await CompileFixesAsync(scoped, cancellation);
            var failed = scoped.Where(s => after.ErrorOf(s.Key) is not null)
                .Select(s => new Uncompiled(s, after.ErrorOf(s.Key)!)).ToList();
            var rescued = await RetryWithHeadersAsync(failed, after, cancellation);
            // Only the files whose fix compiled need their units compiled before the fix.
            var refused = failed.Select(f => f.File).Except(rescued).ToHashSet();
            var live = scoped.Where(s => !refused.Contains(s)).ToList();
            await CompileBeforeAsync(live, cancellation);
            var (diffed, uncompiled) = await DiffAsync(live, after, cancellation);
            // A fix compiled alone (it could not join a shared make) that failed gets the same second chance.
            var late = await RetryWithHeadersAsync(uncompiled, after, cancellation);
            var (lateDiffed, stillUncompiled) = await DiffAsync(late, after, cancellation);
            // Its after object compiled with companions, so what failed is its unit on its own: that is its outcome.
            foreach (var (file, errors) in stillUncompiled) Finish(file.File, BuildRefusal(file.Key, errors));
            await ResolveAsync([.. diffed, .. lateDiffed], cancellation);
        }
        await GroupAsync(decisions, keyOf, cancellation);
        // The batched after objects stay for the module build (ReusableAfterObjects); every other work file goes.
        if (Directory.Exists(_work))
            foreach (var work in Directory.EnumerateDirectories(_work).Where(d => Path.GetFileName(d) != "after"))
                Directory.Delete(work, recursive: true);
        return new Dictionary<string, FileTrial>(_results, StringComparer.Ordinal);
    }

    /// <summary>
    /// The group phase: a fix refused because its code calls a function the running kernel lacks is tried again
    /// together with the built fixes of the update that add that function (a stable backport often adds a helper in
    /// one file and calls it from several others). One livepatch holds both, so the call binds to the new function in
    /// the patch itself. Kept under a key of its own, so a rerun groups again without compiling.
    /// </summary>
    private async Task GroupAsync(IReadOnlyList<FileDecision.Build> decisions, Func<ChangedFile, string> keyOf,
        CancellationToken cancellation)
    {
        var files = decisions.ToDictionary(d => d.File.Path, d => d.File, StringComparer.Ordinal);
        var built = _results.Where(r => r.Value.Outcome == FileOutcome.Built && files.ContainsKey(r.Key))
            .Select(r => files[r.Key]).ToList();
        var groups = new List<(ChangedFile File, IReadOnlyList<ChangedFile> With, IReadOnlyList<string> Headers,
            string Key)>();
        foreach (var (path, trial) in _results)
        {
            if (trial.Outcome != FileOutcome.Refused || trial.MissingSymbols is not { Count: > 0 } missing
                || !files.TryGetValue(path, out var file)) continue;
            var adders = missing.Select(symbol => built.FirstOrDefault(b => b.Path != path
                && b.Functions.Contains(symbol, StringComparer.Ordinal))).ToList();
            if (adders.Any(a => a is null)) continue;
            var with = adders.Select(a => a!).DistinctBy(a => a.Path).OrderBy(a => a.Path, StringComparer.Ordinal)
                .ToList();
            // The header additions each fix was compiled with (its companions) are needed together too.
            IReadOnlyList<string> headers = [.. (trial.Companions ?? [])
                .Concat(with.SelectMany(w => _results[w.Path].Companions ?? []))
                .Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)];
            var key = keyOf(file) + "+" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
                System.Text.Encoding.UTF8.GetBytes(string.Join("\n", with.Select(keyOf).Concat(headers)))))[..16];
            groups.Add((file, with, headers, key));
        }
        if (groups.Count == 0) return;
        progress($"{groups.Count} refused fix(es) call a function another built fix adds: trying each together with " +
            "that fix");
        var objtoolAtLink = ReferenceBinder.ObjtoolRunsAtModuleLink(target.ModuleBuildDirectory);
        await Parallel.ForEachAsync(groups, Options(cancellation), async (group, token) =>
        {
            var (file, with, headers, key) = group;
            var kept = Kept(key);
            var outcome = kept ?? await AttemptAsync(file, key, async () =>
            {
                ChangedFile[] fixes = [file, .. with];
                // The units are those of the C files; the companion headers are applied, never followed to their
                // includers (as when each fix was compiled with them).
                var scope = BuildInputs.Read(TrialRequest(fixes, key));
                var inputs = headers.Count == 0 ? scope : BuildInputs.Read(TrialRequest(
                    [.. headers.Select(h => difference.Files.Single(f => f.Path == h)), .. fixes], key));
                var scoped = new Scoped(file, key, inputs,
                    UnitSelection.Select(tree, scope.Scope, request.MaxUnits, _ => { }).Units);
                var compiled = await UnitCompilation.CompileAsync(target, tree, scoped.Units, inputs.Patches,
                    Path.Combine(_work, key), new StageClock(_ => { }), token);
                Diffed? diffed = null;
                if (Compare(scoped, compiled, headers, objtoolAtLink, d => diffed = d) is { } unchanged)
                    return unchanged;
                var resolved = await PatchResolution.ResolveAsync(target, diffed!.Changed, _exports.Value,
                    request.SkipFidelity, CompileOriginals(token), _ => { }, token);
                return Resolved(diffed, resolved, with);
            });
            // A group that does not build either is kept too (a rerun does not try it again); the file keeps its
            // refusal.
            if (kept is null) Keep(outcome!);
            var together = string.Join(", ", with.Select(w => w.Path));
            if (outcome!.Outcome != FileOutcome.Built)
            {
                progress($"{file.Path}: together with {together}: {Describe(outcome)}: " +
                    (outcome.Reason ?? outcome.Proof ?? "").Split('\n')[0]);
                return;
            }
            _results[file.Path] = outcome;
            progress($"{file.Path}: built together with {together} ({string.Join(", ", outcome.Functions)})");
        });
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
            var own = file.Path.EndsWith(".c", StringComparison.Ordinal) && kbuild.Locate(file.Path) is { } unit
                && unit.SourcePath == file.Path ? unit : null;
            if (own is not null && PristineObjectCache.HoldsAll(Path.Combine(after, key), [own])) held.Add((key, own));
            // A C file #included by another unit compiles into that one too.
            sharedUnits.UnionWith(
                UnitsOf(kbuild, file.Path).Select(u => u.ObjectPath).Where(o => o != own?.ObjectPath));
        }
        var reused = held.Where(h => !sharedUnits.Contains(h.Unit.ObjectPath)).ToList();
        foreach (var (key, unit) in reused) PristineObjectCache.CopyUnit(Path.Combine(after, key), reusable,
            unit.ObjectPath);
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
                var inputs = BuildInputs.Read(TrialRequest([file], key));
                var units = UnitSelection.Select(tree, inputs.Scope, request.MaxUnits, _ => { }).Units;
                if (units.Count == 0)
                    return new FileTrial(key, FileOutcome.NotBuilt, [], null, null, null, null,
                        "the builder's unit selection (kbuild Makefiles and .config, #include of C files) found no " +
                        "unit of this kernel for it");
                scoped.Add(new Scoped(file, key, inputs, units));
                return null;
            });
            if (outcome is not null) Finish(file, outcome);
        }
        return scoped;
    }

    /// <summary>A build of these files' fixes for a trial: up to the resolved patch, in a work directory of its
    /// own.</summary>
    private KernelBuildRequest TrialRequest(IReadOnlyList<ChangedFile> files, string key) =>
        new(new TargetReference.Debian(request.Target), [.. files.Select(difference.PatchPath)], "catchup_trial", [],
            null, Path.Combine(_work, key), request.SkipFidelity, request.MaxUnits);

    /// <summary>
    /// The files (by key) whose after objects were compiled together, each in its own directory, and those whose unit
    /// did not compile there, each with its own compiler errors (the same as compiling it alone would give: the unit
    /// compiles its own C file only, against the kernel's own headers).
    /// </summary>
    private sealed record Precompiled(string Directory, HashSet<string> Files)
    {
        private const string ErrorFile = "compile-error.txt";
        private const string CompanionsFile = "companions.txt";

        public string? For(string key) => Files.Contains(key) ? Path.Combine(Directory, key) : null;

        public string? ErrorOf(string key) =>
            File.Exists(Path.Combine(Directory, key, ErrorFile))
            ? File.ReadAllText(Path.Combine(Directory, key, ErrorFile)) : null;

        public void KeepError(string key, string errors) =>
            AtomicFile.WriteText(Path.Combine(Directory, key, ErrorFile), errors);

        /// <summary>The changed headers a file's after object was compiled with (none for the shared make).</summary>
        public IReadOnlyList<string> CompanionsOf(string key) =>
            File.Exists(Path.Combine(Directory, key, CompanionsFile))
            ? File.ReadAllLines(Path.Combine(Directory, key, CompanionsFile)) : [];

        /// <summary>Takes an after object compiled with companion headers: it replaces the error the shared make
        /// gave.</summary>
        public void KeepWithCompanions(string key, IReadOnlyList<string> companions)
        {
            AtomicFile.WriteText(Path.Combine(Directory, key, CompanionsFile),
                string.Concat(companions.Select(c => c + "\n")));
            File.Delete(Path.Combine(Directory, key, ErrorFile));
            Files.Add(key);
        }
    }

    /// <summary>The pristine objects of the files' units, in shared makes, cached across builds of this
    /// kernel.</summary>
    private async Task CompileBeforeAsync(IReadOnlyList<Scoped> scoped, CancellationToken cancellation)
    {
        var units = scoped.SelectMany(s => s.Units).DistinctBy(u => u.ObjectPath).ToList();
        if (units.Count == 0) return;
        var watch = Stopwatch.StartNew();
        progress($"compiling the {units.Count} unit(s) of {scoped.Count} file(s) before the fixes, " +
            $"{UnitCompilation.PrecompileChunk} per make");
        var failed = await UnitCompilation.PrecompilePristineAsync(target, tree, units, originals: false, cancellation,
            progress);
        progress($"compiled before the fixes in {watch.Elapsed.TotalSeconds:0} s" +
            (failed.Count > 0 ? $"; {failed.Count} unit(s) did not compile and are tried one by one" : ""));
    }

    /// <summary>
    /// The after objects of every C file that is its own unit, compiled together with all of those fixes applied in one
    /// view (a unit compiles only its own C file, so each object is the one its fix alone gives), and the compiler's
    /// errors of each that does not compile. Compiled first: a fix that does not compile needs no before side.
    /// </summary>
    private async Task<Precompiled> CompileFixesAsync(IReadOnlyList<Scoped> scoped, CancellationToken cancellation)
    {
        var directory = Path.Combine(_work, "after");
        // A unit's after object depends on its fix alone when the unit is the changed C file itself, and no other
        // file of the batch compiles into it.
        var byObject = scoped.SelectMany(s => s.Units.Select(u => (u.ObjectPath, s))).ToLookup(x => x.ObjectPath,
            x => x.s);
        var batch = scoped.Where(s => s.File.Path.EndsWith(".c", StringComparison.Ordinal) && s.Units.Count == 1
            && s.Units[0].SourcePath == s.File.Path && byObject[s.Units[0].ObjectPath].Count() == 1).ToList();
        // A unit that #includes another batched C file (a .c compiled on its own and also included elsewhere) would
        // carry both fixes: it compiles on its own instead.
        var batched = batch.Select(s => s.File.Path).ToHashSet(StringComparer.Ordinal);
        var includes = KbuildUnits.Open(tree).Includes;
        var carriesAnother = batch.SelectMany(s => includes.SourcesIncluding(s.File.Path)
                .Where(i => i != s.File.Path && batched.Contains(i)))
            .ToHashSet(StringComparer.Ordinal);
        batch = [.. batch.Where(s => !carriesAnother.Contains(s.File.Path))];
        // An interrupted run's after objects are kept per file (the key names the fix, the kernel and the builder).
        var compiled = batch.Where(s => PristineObjectCache.HoldsAll(Path.Combine(directory, s.Key), s.Units))
            .Select(s => s.Key).ToHashSet(StringComparer.Ordinal);
        var precompiled = new Precompiled(directory, compiled);
        var left = batch.Where(s => !compiled.Contains(s.Key) && precompiled.ErrorOf(s.Key) is null).ToList();
        if (left.Count < 2) return precompiled;
        var watch = Stopwatch.StartNew();
        progress($"compiling the fixes of {left.Count} C file(s) together, {UnitCompilation.PrecompileChunk} per make" +
            (compiled.Count > 0 ? $" ({compiled.Count} compiled by an earlier run)" : ""));
        var together = await CompileTogetherAsync(left, [], directory, cancellation);
        compiled.UnionWith(together.Compiled);
        foreach (var (key, errors) in together.Errors) precompiled.KeepError(key, errors);
        progress($"compiled after the fixes in {watch.Elapsed.TotalSeconds:0} s" + (together.Unsettled.Count > 0
            ? $"; {together.Unsettled.Count} did not apply, or failed without telling why, and are tried one by one"
            : ""));
        return precompiled;
    }

    /// <summary>What a shared make of fixes gave, by file key.</summary>
    /// <param name="Compiled">Files whose unit compiled; its objects are in the directory, one per key.</param>
    /// <param name="Errors">Files whose unit did not compile, with the compiler's errors for it.</param>
    /// <param name="Unsettled">Files that did not apply in the shared view (with why) or failed without telling
    /// why.</param>
    private sealed record Together(IReadOnlySet<string> Compiled, IReadOnlyDictionary<string, string> Errors,
        IReadOnlyDictionary<string, string?> Unsettled)
    {
        public string? ErrorsOf(string key) =>
            Errors.TryGetValue(key, out var errors) ? errors : Unsettled.GetValueOrDefault(key);
    }

    /// <summary>
    /// Compiles single-unit C files with their fixes applied in shared makes, after the given header changes (none for
    /// the first pass), keeping each compiled object under <paramref name="directory"/>/KEY.
    /// </summary>
    private async Task<Together> CompileTogetherAsync(IReadOnlyList<Scoped> files, IReadOnlyList<ChangedFile> headers,
        string directory, CancellationToken cancellation)
    {
        var compiled = new HashSet<string>(StringComparer.Ordinal);
        var errors = new Dictionary<string, string>(StringComparer.Ordinal);
        var unsettled = new Dictionary<string, string?>(StringComparer.Ordinal);
        var tried = 0;
        foreach (var chunk in files.Chunk(UnitCompilation.PrecompileChunk))
        {
            var offset = tried;
            tried += chunk.Length;
            await using var patched = await BuildWorkspace.OpenAsync(tree, cancellation);
            foreach (var header in headers)
            {
                try
                {
                    await patched.ApplyAsync(SourcePatch.Read(difference.PatchPath(header)), cancellation);
                }
                catch (SourcePatchException e)
                {
                    progress($"{header.Path}: its change does not apply to this kernel's tree, left out ({e.Message})");
                }
            }
            var applied = new List<Scoped>();
            foreach (var file in chunk)
            {
                try
                {
                    foreach (var patch in file.Inputs.Patches) await patched.ApplyAsync(patch.Patch, cancellation);
                    applied.Add(file);
                }
                catch (SourcePatchException e)
                {
                    unsettled[file.Key] = e.Message;
                }
            }
            if (applied.Count == 0) continue;
            var chunkDirectory = Path.Combine(_work, "together-chunk");
            var failures =
                (await patched.CompileUnitsKeepGoingAsync([.. applied.Select(s => s.Units[0])], chunkDirectory,
                UnitCompilation.DiffCFlags(target), cancellation, CompileProgress.Every(files.Count, progress, offset)))
                .ToDictionary(f => f.Unit.ObjectPath, f => f.Errors, StringComparer.Ordinal);
            foreach (var file in applied)
            {
                if (!failures.TryGetValue(file.Units[0].ObjectPath, out var failed))
                {
                    PristineObjectCache.MoveUnit(chunkDirectory, Path.Combine(directory, file.Key),
                        file.Units[0].ObjectPath);
                    compiled.Add(file.Key);
                }
                else if (failed is not null) errors[file.Key] = failed;
                else unsettled[file.Key] = null;
            }
            // A make in which every unit failed wrote nothing.
            if (Directory.Exists(chunkDirectory)) Directory.Delete(chunkDirectory, recursive: true);
        }
        return new Together(compiled, errors, unsettled);
    }

    private async Task<(List<Diffed> Diffed, List<Uncompiled> Uncompiled)> DiffAsync(IReadOnlyList<Scoped> scoped,
        Precompiled after, CancellationToken cancellation)
    {
        var diffed = new ConcurrentBag<Diffed>();
        var uncompiled = new ConcurrentBag<Uncompiled>();
        var objtoolAtLink = ReferenceBinder.ObjtoolRunsAtModuleLink(target.ModuleBuildDirectory);
        await Parallel.ForEachAsync(scoped, Options(cancellation), async (file, token) =>
        {
            var outcome = await AttemptAsync(file.File, file.Key, async () =>
            {
                if (after.ErrorOf(file.Key) is { } errors)
                {
                    uncompiled.Add(new Uncompiled(file, errors));
                    return null;
                }
                IReadOnlyList<CompiledUnit> compiled;
                try
                {
                    compiled = await UnitCompilation.CompileAsync(target, tree, file.Units, file.Inputs.Patches,
                        Path.Combine(_work, file.Key), new StageClock(_ => { }), token,
                        precompiledAfter: after.For(file.Key));
                }
                catch (ModuleBuildException e) when (file.Units is [var own] && own.SourcePath == file.File.Path)
                {
                    uncompiled.Add(new Uncompiled(file, e.Message));
                    return null;
                }
                // A C file compiled on its own keeps its after object for the module build, as the shared make's do.
                if (after.For(file.Key) is null && file.Units is [var unit] && unit.SourcePath == file.File.Path)
                    PristineObjectCache.CopyUnit(Path.Combine(_work, file.Key, "after"),
                        Path.Combine(after.Directory, file.Key), unit.ObjectPath);
                return Compare(file, compiled, after.CompanionsOf(file.Key), objtoolAtLink, diffed.Add);
            });
            if (outcome is not null) Finish(file.File, CompiledWith(outcome, after.CompanionsOf(file.Key)));
        });
        return ([.. diffed], [.. uncompiled]);
    }

    /// <summary>
    /// A file's units compared before and after: refused by the differ's rules, no code when nothing contributes,
    /// otherwise handed on (<paramref name="diffed"/>) for the fidelity proof and resolution.
    /// </summary>
    private FileTrial? Compare(Scoped file, IReadOnlyList<CompiledUnit> compiled, IReadOnlyList<string> companions,
        bool objtoolAtLink, Action<Diffed> diffed)
    {
        var diffs = UnitDiffing.DiffAll(compiled, _exports, objtoolAtLink);
        UnitDiffing.ThrowIfRefused(diffs);
        var changed = diffs.Where(d => d.Contributes).ToList();
        if (changed.Count == 0)
            return new FileTrial(file.Key, FileOutcome.NoCode, [], null, null, null, null,
                $"compiled before and after ({string.Join(", ", file.Units.Select(u => u.ObjectPath))})" +
                (companions.Count > 0 ? $" with the additions of {string.Join(", ", companions)}" : "") +
                ": the machine code is the same" + string.Concat(diffs.SelectMany(d => d.Notes).Select(n => "; " + n)));
        diffed(new Diffed(file, changed, companions));
        return null;
    }

    /// <summary>
    /// The files whose fix did not compile against the running kernel's headers. A fix of a stable update often uses
    /// what the same update adds to a header (a helper, a flag, a declaration): compiled with the header changes that
    /// only add, it is built with those companions, which the module applies as context. A fix that compiles only
    /// with the other header changes needs a changed layout, signature or inline function of the running kernel, and
    /// is refused naming them; one that compiles with none needs another C file of the update. Returns the files whose
    /// fix compiled with companions, their after objects kept; every other file is finished here (refused).
    /// </summary>
    private async Task<List<Scoped>> RetryWithHeadersAsync(IReadOnlyList<Uncompiled> uncompiled, Precompiled after,
        CancellationToken cancellation)
    {
        if (uncompiled.Count == 0) return [];
        var headers = difference.Files.Where(f => f.Path.EndsWith(".h", StringComparison.Ordinal) && f.Patch is not null
            && f.Kind != FileChangeKind.Deleted).ToList();
        var additive = headers.Where(h => SourceChange.OnlyAdds(difference.ReadOld(h), difference.ReadNew(h))).ToList();
        var verdicts = headers.Except(additive).ToDictionary(h => h.Path,
            h => SourceChange.ClassifyHeader(difference.ReadOld(h), difference.ReadNew(h)), StringComparer.Ordinal);
        // Headers whose only change is comments or spacing are applied too, but never named as what a fix needs.
        var others = headers.Where(h => verdicts.TryGetValue(h.Path, out var v) && v.Impact != HeaderImpact.NoCode)
            .ToList();
        var includes = KbuildUnits.Open(tree).Includes;
        var includers = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        IReadOnlyList<string> IncludedBy(Scoped file, IEnumerable<ChangedFile> candidates) => [.. candidates
            .Where(h => (includers.TryGetValue(h.Path, out var set) ? set
                : includers[h.Path] = includes.SourcesIncluding(h.Path).ToHashSet(StringComparer.Ordinal)).Contains(
            file.File.Path))
            .Select(h => h.Path)];

        progress($"{uncompiled.Count} fix(es) did not compile against the running kernel's headers"
            + (additive.Count == 0 ? ""
            : $": compiling them again with the {additive.Count} header change(s) of the update that only add"));
        var none = new Together(new HashSet<string>(), new Dictionary<string, string>(),
            new Dictionary<string, string?>());
        var withAdditions = additive.Count == 0 ? none
            : await CompileTogetherAsync([.. uncompiled.Select(u => u.File)], additive, after.Directory, cancellation);
        var rescued = uncompiled.Where(u => withAdditions.Compiled.Contains(u.File.Key)).Select(u => u.File).ToList();
        foreach (var file in rescued) after.KeepWithCompanions(file.Key, IncludedBy(file, additive));
        progress($"{rescued.Count} of {uncompiled.Count} compiled with the additions");

        var left = uncompiled.Where(u => !withAdditions.Compiled.Contains(u.File.Key)).ToList();
        if (left.Count == 0) return rescued;
        if (headers.Count > 0)
            progress($"{left.Count} fix(es) still do not compile: compiling them with all {headers.Count} header " +
                $"change(s) of the update");
        var scratch = Path.Combine(_work, "with-all-headers");
        var withAll = headers.Count == 0 ? none
            : await CompileTogetherAsync([.. left.Select(u => u.File)], headers, scratch, cancellation);
        foreach (var (file, errors) in left)
        {
            if (withAll.Compiled.Contains(file.Key))
            {
                // The compiler's errors name what the fix needs (a member, a function, a parameter): the headers whose
                // changed lines name it are the ones to blame, among the many a unit includes.
                var candidates = IncludedBy(file, others);
                var named = QuotedIdentifiers(errors);
                var culprits = candidates.Where(h => ChangedIdentifiers(h).Overlaps(named)).ToList();
                var needed = (culprits.Count > 0 ? culprits : candidates).Select(h => (Header: h, Verdict: verdicts[h]))
                    .ToList();
                var layout = needed.Any(v => v.Verdict.Impact == HeaderImpact.Refused);
                var described = needed.Take(culprits.Count > 0 ? needed.Count : 5).Select(v => $"{v.Header} " +
                    (v.Verdict.Reasons.Count > 0 ? string.Join(", ", v.Verdict.Reasons)
                        : $"changes {string.Join(", ", v.Verdict.Constructs.Take(5))}, code of every unit that " +
                    $"includes it"));
                Finish(file.File,
                    new FileTrial(file.Key, FileOutcome.Refused, [], null, layout ? "header-layout" : "header-change",
                    culprits.Count > 0
                        ? $"it compiles only with what the update changes in {string.Join(", ", culprits)} " +
                          $"(its errors name " +
                    $"{string.Join(", ", named.Where(n => culprits.Any(h => ChangedIdentifiers(h).Contains(n))))}): " +
                          string.Join("; ", described)
                        : "it compiles only with header changes of the update beyond additions"
                    + (needed.Count == 0 ? ""
                            : $", in one of the {needed.Count} changed headers it includes: "
                    + string.Join("; ", described) +
                              (needed.Count > 5 ? $"; and {needed.Count - 5} more" : "")),
                    layout ? "the fix depends on a changed definition the running kernel's data and callers were " +
                    "built with: " +
                        "reboot into the new version"
                        : "build it together with the header's fix (kintsugi kernel build with both patches), which " +
                    "rebuilds " +
                        "every unit that includes the header, or reboot into the new version", null));
            }
            else
                Finish(file.File, new FileTrial(file.Key, FileOutcome.Refused, [], null, "build",
                    errors + (withAll.ErrorsOf(file.Key) is { } again && again != errors
                        ? "\nwith every header change of the update applied, it still fails:\n" + again : ""),
                    "the change does not build against this kernel's source even with every header change of the " +
                    "update: " +
                    "it needs another C file's change (such as a function the update adds there): reboot into the " +
                    "new version", null));
        }
        if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        return rescued;
    }

    /// <summary>The identifiers gcc quotes in its errors (‘name’ or 'name').</summary>
    private static IReadOnlySet<string> QuotedIdentifiers(string errors) =>
        QuotedIdentifier().Matches(errors).Select(m => m.Groups[1].Value).ToHashSet(StringComparer.Ordinal);

    private readonly ConcurrentDictionary<string, IReadOnlySet<string>> _changedIdentifiers =
        new(StringComparer.Ordinal);

    private IReadOnlySet<string> ChangedIdentifiers(string path) => _changedIdentifiers.GetOrAdd(path,
        _ => difference.IdentifiersOnChangedLines(difference.Files.Single(f => f.Path == path)));

    [System.Text.RegularExpressions.GeneratedRegex("[‘']([A-Za-z_][A-Za-z0-9_]*)[’']")]
    private static partial System.Text.RegularExpressions.Regex QuotedIdentifier();

    /// <summary>
    /// Each file's functions found and proven in the running kernel: first with the before objects, then, for the
    /// files whose units those cannot prove, with the units compiled as the distribution did, all in shared makes.
    /// </summary>
    private async Task ResolveAsync(IReadOnlyList<Diffed> diffed, CancellationToken cancellation)
    {
        if (diffed.Count == 0) return;
        var waiting = new ConcurrentBag<(Diffed File, IReadOnlyList<TranslationUnit> Units)>();
        await Parallel.ForEachAsync(diffed, Options(cancellation), async (file, token) =>
        {
            var outcome = await AttemptAsync(file.File.File, file.File.Key, async () =>
            {
                var tried = await PatchResolution.TryResolveAsync(target, file.Changed, _exports.Value,
                    request.SkipFidelity, _ => { }, token);
                if (tried.Patch is { } patch) return Resolved(file, patch);
                waiting.Add((file, tried.OriginalsNeeded));
                return null;
            });
            if (outcome is not null) Finish(file.File.File, CompiledWith(outcome, file.Companions));
        });
        if (waiting.IsEmpty) return;
        var units = waiting.SelectMany(w => w.Units).DistinctBy(u => u.ObjectPath).ToList();
        var watch = Stopwatch.StartNew();
        progress($"compiling {units.Count} changed unit(s) as the distribution did, where the objects compiled " +
            "for the diff could not prove them, for the fidelity proof");
        var failed = await UnitCompilation.PrecompilePristineAsync(target, tree, units, originals: true, cancellation,
            progress);
        progress($"compiled the originals in {watch.Elapsed.TotalSeconds:0} s" +
            (failed.Count > 0 ? $"; {failed.Count} unit(s) did not compile and are tried one by one" : ""));
        await Parallel.ForEachAsync(waiting, Options(cancellation), async (wait, token) =>
        {
            var file = wait.File;
            var outcome = await AttemptAsync(file.File.File, file.File.Key, async () =>
                Resolved(file, await PatchResolution.ResolveAsync(target, file.Changed, _exports.Value,
                    request.SkipFidelity, CompileOriginals(token), _ => { }, token)));
            Finish(file.File.File, CompiledWith(outcome!, file.Companions));
        });
    }

    /// <param name="with">The built fixes a group was compiled with: only the file's own functions are its
    /// outcome (the others are theirs).</param>
    private FileTrial Resolved(Diffed file, ResolvedPatch resolved, IReadOnlyList<ChangedFile>? with = null)
    {
        resolved.ThrowIfUnfaithful(request.SkipFidelity);
        var functions = with is null ? resolved.Functions
            : [.. resolved.Functions.Where(f => f.Record.Unit == file.File.File.Path)];
        // New functions alone change nothing the running kernel does: a CVE must not count as covered by them.
        if (functions.Count == 0)
            return new FileTrial(file.File.Key, FileOutcome.Refused, [], null, "new-code-only",
                "it replaces no function of the running kernel, it only adds code" +
                (file.File.File.Functions.Count > 0 ? $" ({string.Join(", ", file.File.File.Functions)})" : "") +
                " that takes effect through callers in other changed files",
                "it can only be live patched together with the changes that call it: reboot into the new version",
                null);
        return new FileTrial(file.File.Key, FileOutcome.Built,
            [.. functions.Select(f => $"{f.Object}:{f.Record.Name}")],
            string.Join(", ", functions.Select(f => f.Object).Distinct()), null, null, null, null,
            file.Companions.Count > 0 ? file.Companions : null,
            BuiltWith: with is null ? null : [.. with.Select(w => w.Path)]);
    }

    /// <summary>
    /// A refusal keeps the companion headers its fix was compiled with: the group phase compiles the fix with them
    /// again.
    /// </summary>
    private static FileTrial CompiledWith(FileTrial trial, IReadOnlyList<string> companions) =>
        trial is { Outcome: FileOutcome.Refused, Companions: null } && companions.Count > 0
            ? trial with { Companions = companions } : trial;

    /// <summary>Compiles units as the distribution did, for the fidelity proof where the before objects cannot
    /// decide.</summary>
    private Func<IReadOnlyList<TranslationUnit>, Task> CompileOriginals(CancellationToken cancellation) =>
        units => UnitCompilation.CompileOriginalsAsync(target, tree, units, new StageClock(_ => { }), cancellation);

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
                "reboot into the new version, or rewrite the fix as the reason says", null,
                MissingSymbols: e.MissingSymbol is { } missing ? [missing] : null);
        }
        catch (SourcePatchException e)
        {
            return new FileTrial(key, FileOutcome.Refused, [], null, "patch", e.Message, "reboot into the new version",
                null);
        }
        catch (ModuleBuildException e)
        {
            return BuildRefusal(key, e.Message);
        }
    }

    private static FileTrial BuildRefusal(string key, string errors) =>
        new(key, FileOutcome.Refused, [], null, "build", errors,
            "the change does not build on its own against this kernel's source (it may need another change of the " +
        "update, " +
            "such as a header): reboot into the new version", null);

    private FileTrial? Kept(string key)
    {
        var record = Path.Combine(_state, key + ".json");
        return File.Exists(record)
            && System.Text.Json.JsonSerializer.Deserialize(File.ReadAllBytes(record),
                CatchUpJson.Default.FileTrial) is { } kept
            && kept.Key == key ? kept : null;
    }

    /// <summary>Keeps the outcome on disk at once (an interrupted run loses no finished file) and reports it.</summary>
    private void Finish(ChangedFile file, FileTrial trial)
    {
        Keep(trial);
        _results[file.Path] = trial;
        progress($"[{Interlocked.Increment(ref _done)}/{_total}] {file.Path}: {Describe(trial)}");
    }

    /// <summary>The trial's record under its key, read back by <see cref="Kept"/>.</summary>
    private void Keep(FileTrial trial) => AtomicFile.Write(Path.Combine(_state, trial.Key + ".json"),
        System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(trial, CatchUpJson.Default.FileTrial));

    private static string Describe(FileTrial trial) => trial.Outcome switch
    {
        FileOutcome.Built => $"built ({string.Join(", ", trial.Functions)})",
        FileOutcome.Refused => $"refused ({trial.Rule})",
        FileOutcome.NoCode => "changes no code",
        _ => "not built in this kernel",
    };
}
