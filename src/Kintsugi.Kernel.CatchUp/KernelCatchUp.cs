using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Kintsugi.Kernel.Build.Phases;
using Kintsugi.Kernel.Build.Units;
using Kintsugi.Lab;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>What to catch up: the running kernel's release, the newer source version of its line, where to
/// write.</summary>
/// <param name="Only">Path prefixes: only changed files under them are built (the others are reported as outside the
/// scope).</param>
public sealed record CatchUpRequest(
    KernelRelease Target,
    string ToVersion,
    string OutputDirectory,
    string? Name = null,
    string? BaseDirectory = null,
    int MaxUnits = 40,
    IReadOnlyList<string>? Only = null,
    bool SkipFidelity = false);

public sealed record CatchUpResult(CatchUpReport Report, string ReportPath, string TextReportPath, ExitCode ExitCode);

/// <summary>The outcome of building one changed file on its own, kept so that a second run does not build it
/// again.</summary>
/// <param name="Companions">Changed headers whose additions the fix needs: the module applies them as context.</param>
/// <param name="MissingSymbols">Refused because the fixed code calls what the running kernel lacks (a function
/// another fix of the update may add).</param>
/// <param name="BuiltWith">Built together with these changed files, which add what its fixed code calls.</param>
public sealed record FileTrial(string Key, FileOutcome Outcome, IReadOnlyList<string> Functions, string? Object,
    string? Rule, string? Reason, string? Advice, string? Proof, IReadOnlyList<string>? Companions = null,
    IReadOnlyList<string>? MissingSymbols = null, IReadOnlyList<string>? BuiltWith = null);

/// <summary>
/// <c>kintsugi kernel catch-up</c>: the security content of a newer linux-source version of the running
/// kernel's line as one cumulative livepatch, and the report of what it covers. Phases: sources (both
/// versions), changelog (the CVEs between them), difference (one patch per changed file), plan (decisions
/// that need no compiler), trials (each remaining file through the builder on its own: built, refused with
/// its rule, or no code), module (every built file in one module), report.
/// </summary>
public sealed partial class KernelCatchUp(DebianKernelArchive archive, string cacheRoot, Func<LabMachine> lab,
    Action<string> progress)
{
    public async Task<CatchUpResult> RunAsync(CatchUpRequest request, CancellationToken cancellation = default)
    {
        var clock = new StageClock(progress);
        Task<T> Stage<T>(string name, Func<Task<T>> work) => clock.RunAsync(name, work);

        var output = Path.GetFullPath(request.OutputDirectory);
        Directory.CreateDirectory(output);
        var kernel = await Stage("download", () => archive.FetchAsync(request.Target,
            KernelParts.Image | KernelParts.Headers | KernelParts.Source, cancellation));
        var from = LinuxSourceArchive.OfKernel(kernel);
        var to = await Stage("download newer source", () => new LinuxSourceArchive(cacheRoot, progress)
            .FetchAsync(LinuxSourceVersion.Of(request.Target, request.ToVersion), cancellation));
        var versions = DebianChangelog.Read(to.Changelog).Between(from.Source.Version, to.Source.Version);
        var difference = await Stage("difference",
            () => SourceDifference.ComputeAsync(from, to, cacheRoot, progress, cancellation));
        var tree = await Stage("prepare", () => KernelSourceTree.PrepareAsync(kernel, progress, cancellation));
        var plan = await Stage("plan", () => PlanAsync(request, kernel.Target, difference, tree, output, cancellation));

        var trials = await Stage("trials",
            () => RunTrialsAsync(request, kernel, difference, plan, output, cancellation));
        var mappings = CveMatcher.Match(versions.SelectMany(v => v.Items), difference.Files);
        var files = Report(plan, trials, mappings, difference);
        var cves = Coverage(mappings, files);

        var built = files.Where(f => f.Outcome == FileOutcome.Built).ToList();
        string? module = null;
        int? level = null;
        if (built.Count > 0)
        {
            var result = await Stage("module",
                () => BuildModuleAsync(request, kernel.Target, tree, difference, built, cves, output, cancellation));
            module = result.Module;
            level = result.Manifest?.Level;
        }
        var report = new CatchUpReport(kernel.Target.Release.Value, kernel.Target.PackageVersion,
            kernel.Target.BuildId.ToString(),
            from.Source.ToString(), to.Source.ToString(), module, level, [.. versions.Select(v => v.Version)],
            Totals(files, cves), files, cves, clock.Stages, DateTimeOffset.UtcNow);
        var reportPath = Path.Combine(output, "catch-up.json");
        var textPath = Path.Combine(output, "catch-up.txt");
        AtomicFile.Write(reportPath, report.ToUtf8());
        AtomicFile.WriteText(textPath, report.ToText());
        var exit = built.Count == 0 ? ExitCode.NothingToDo
            : files.Any(f => f.Outcome == FileOutcome.Refused)
            || cves.Any(c => c.Status is CveStatus.NeedsReboot or CveStatus.Unmapped)
                ? ExitCode.CatchUpIncomplete : ExitCode.Success;
        return new CatchUpResult(report, reportPath, textPath, exit);
    }

    /// <summary>
    /// The plan, or the one an earlier run into the same output made from the same difference, kernel, builder and
    /// options: placing every changed file in kbuild's Makefiles takes minutes, and a rerun must not repeat it.
    /// </summary>
    private async Task<CatchUpPlan> PlanAsync(CatchUpRequest request, KernelTarget kernel, SourceDifference difference,
        KernelSourceTree tree, string output, CancellationToken cancellation)
    {
        var path = Path.Combine(output, ".catch-up", "plan.json");
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\n",
            [difference.From.ToString(), difference.To.ToString(),
                .. difference.Files.Select(f => $"{f.Path} {f.PatchSha256}"),
             kernel.BuildId.ToString(), KernelPatchBuilder.BuilderVersion,
                 request.MaxUnits.ToString(System.Globalization.CultureInfo.InvariantCulture),
             .. request.Only ?? []]))));
        if (File.Exists(path)
            && JsonSerializer.Deserialize(await File.ReadAllBytesAsync(path, cancellation),
                CatchUpJson.Default.KeptPlan) is { } kept
            && kept.Key == key && CatchUpPlan.FromRecords(difference, kept.Files) is { } reused)
        {
            progress($"the plan of an earlier run over the same difference is kept ({path})");
            return reused;
        }
        var plan = CatchUpPlan.Make(difference, tree, request.MaxUnits, request.Only ?? [], progress);
        AtomicFile.Write(path,
            JsonSerializer.SerializeToUtf8Bytes(new KeptPlan(key, plan.ToRecords()), CatchUpJson.Default.KeptPlan));
        return plan;
    }

    /// <summary>Each file the plan sends to the builder, tried on its own (see <see cref="CatchUpTrials"/>).</summary>
    private async Task<IReadOnlyDictionary<string, FileTrial>> RunTrialsAsync(CatchUpRequest request,
        FetchedKernel kernel,
        SourceDifference difference, CatchUpPlan plan, string output, CancellationToken cancellation)
    {
        var target = await DebianBuildTarget.FetchAsync(archive, kernel.Target.Release, lab, cancellation);
        var tree = await target.PrepareAsync(progress, cancellation);
        return await new CatchUpTrials(target, tree, request, difference, output, progress)
            .RunAsync([.. plan.Decisions.OfType<FileDecision.Build>()], file => TrialKey(kernel.Target, file, request),
                cancellation);
    }

    private async Task<KernelBuildResult> BuildModuleAsync(CatchUpRequest request, KernelTarget kernel,
        KernelSourceTree tree,
        SourceDifference difference, IReadOnlyList<FileReport> built, IReadOnlyList<CveReport> cves, string output,
        CancellationToken cancellation)
    {
        // With --base the name (and the next level) come from the base, unless --name says otherwise.
        var name = request.Name ?? (request.BaseDirectory is null
            ? "catchup_" + NotIdentifier().Replace(difference.To.Version, "_") : null);
        var covered = cves.Where(c => c.Status == CveStatus.Covered).Select(c => c.Id).ToList();
        var directory = Path.Combine(output, "module");
        var changed = built.Select(f => difference.Files.Single(c => c.Path == f.Path)).ToList();
        // Headers whose additions some built fixes use are applied with the fixes, as context: they select no unit.
        var context = built.SelectMany(f => f.Companions ?? []).Distinct(StringComparer.Ordinal)
            .Select(path => difference.Files.Single(c => c.Path == path)).ToList();
        // A rerun over the same outcomes finds its module already built: the same patches for the same kernel.
        if (File.Exists(Path.Combine(directory, "manifest.json")) && request.BaseDirectory is null)
        {
            var existing = BuildManifest.Read(Path.Combine(directory, "manifest.json"));
            var wanted = changed.Concat(context).Select(c => c.PatchSha256).Order(StringComparer.Ordinal);
            if (existing.Target.BuildId == kernel.BuildId.ToString()
                && existing.Patches.Select(p => p.Sha256).Order(StringComparer.Ordinal).SequenceEqual(wanted)
                && File.Exists(Path.Combine(directory, existing.Module + ".ko")))
            {
                progress($"{existing.Module}.ko already holds these {built.Count} file(s): kept");
                return new KernelBuildResult(BuildOutcome.Built, Path.Combine(directory, existing.Module + ".ko"),
                    Path.Combine(directory, "manifest.json"), existing, "kept", []);
            }
        }
        progress($"linking {built.Count} built file(s) into one module");
        var reusable = CatchUpTrials.ReusableAfterObjects(output, tree,
            [.. changed.Select(c => (c, TrialKey(kernel, c, request)))]);
        progress($"{reusable.Units} unit(s) compiled with their fixes by the trials are used as they are");
        // --max-units bounded each file's units in its trial; together, an update's files compile hundreds of units.
        var buildRequest = new KernelBuildRequest(new TargetReference.Debian(request.Target),
            [.. built.Select(f => Path.Combine(difference.Directory, f.Patch!))],
            name, covered, request.BaseDirectory, directory, request.SkipFidelity, MaxUnits: int.MaxValue,
            CarryBasePatches: false,
            PrecompiledAfter: reusable.Directory, ContextPatchFiles: [.. context.Select(difference.PatchPath)]);
        var result = await new KernelPatchBuilder(archive, lab, progress).BuildAsync(buildRequest, cancellation);
        // The trials' work is done with (a rerun whose trials were all kept may have none left).
        if (Directory.Exists(Path.Combine(output, ".catch-up", "work")))
            Directory.Delete(Path.Combine(output, ".catch-up", "work"), recursive: true);
        if (result.Outcome != BuildOutcome.Built)
            throw new CatchUpException($"the files that built one by one built nothing together: {result.Message}",
                ExitCode.InternalError);
        return result;
    }

    private static List<FileReport> Report(CatchUpPlan plan, IReadOnlyDictionary<string, FileTrial> trials,
        IReadOnlyList<CveMapping> mappings, SourceDifference difference)
    {
        var cvesOf = mappings.SelectMany(m => m.Files.Select(f => (f.Path, m.Cve))).GroupBy(x => x.Path)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<string>)[
                .. g.Select(x => x.Cve).Distinct().Order(StringComparer.Ordinal)], StringComparer.Ordinal);
        return [.. plan.Decisions.Select(decision =>
        {
            var file = decision.File;
            var cves = cvesOf.GetValueOrDefault(file.Path) ?? [];
            var change = file.Kind.ToString().ToLowerInvariant();
            return decision switch
            {
                FileDecision.Decided d => new FileReport(file.Path, change, d.Outcome, file.Functions, cves, null,
                    d.Rule, d.Reason, d.Advice, d.Proof, file.Patch),
                FileDecision.Build b when trials.TryGetValue(file.Path, out var t) =>
                    new FileReport(file.Path, change, t.Outcome, t.Outcome == FileOutcome.Built ? t.Functions
                        : file.Functions, cves, t.Object, t.Rule, t.Reason, t.Advice, t.Proof, file.Patch,
                        t.Outcome == FileOutcome.Built ? t.Companions : null,
                        t.Outcome == FileOutcome.Built ? t.BuiltWith : null),
                _ => throw new InvalidOperationException($"{file.Path} was planned for a build but has no trial"),
            };
        })];
    }

    /// <summary>A CVE is covered only when every changed file it maps to is built (or proven to need nothing on this
    /// kernel) and at least one is built.</summary>
    private static List<CveReport> Coverage(IReadOnlyList<CveMapping> mappings, IReadOnlyList<FileReport> files)
    {
        var byPath = files.ToDictionary(f => f.Path, StringComparer.Ordinal);
        return [.. mappings.Select(mapping =>
        {
            var subjects = mapping.Items.Select(i => i.Subject).Distinct().ToList();
            if (mapping.Files.Count == 0)
                return new CveReport(mapping.Cve, CveStatus.Unmapped, null, subjects, [],
                    "no changed file matches its subject (by function name or path): whether the livepatch closes it " +
                    "is unknown");
            var outcomes = mapping.Files.Select(m => byPath[m.Path]).ToList();
            var blocking = outcomes.Where(f => f.Outcome is FileOutcome.Refused
                || f.Outcome == FileOutcome.NotKernelCode && f.Rule == "scope").ToList();
            if (blocking.Count > 0)
                return new CveReport(mapping.Cve, CveStatus.NeedsReboot, mapping.Confidence, subjects, mapping.Files,
                    "not built: " + string.Join("; ",
                        blocking.Select(f => $"{f.Path} ({f.Rule}{(f.Rule == "scope" ? ": outside --only" : "")})")));
            if (outcomes.Any(f => f.Outcome == FileOutcome.Built))
                return new CveReport(mapping.Cve, CveStatus.Covered, mapping.Confidence, subjects, mapping.Files,
                    "every file it maps to is built");
            if (outcomes.All(f => f.Outcome is FileOutcome.NotBuilt or FileOutcome.NotKernelCode))
                return new CveReport(mapping.Cve, CveStatus.NotAffected, mapping.Confidence, subjects, mapping.Files,
                    "the files it maps to are not built into this kernel (see each file's proof)");
            // Only "no code" files: the fix changes nothing this kernel compiles, which is not proof that it is closed.
            return new CveReport(mapping.Cve, CveStatus.NotAffected, mapping.Confidence, subjects, mapping.Files,
                "the files it maps to change no machine code of this kernel (compiled before and after, or comments " +
                "only)");
        })];
    }

    private static CatchUpTotals Totals(IReadOnlyList<FileReport> files, IReadOnlyList<CveReport> cves) => new(
        files.Count, files.Count(f => f.Outcome == FileOutcome.Built),
        files.Count(f => f.Outcome == FileOutcome.Refused),
        files.Count(f => f.Outcome == FileOutcome.NoCode), files.Count(f => f.Outcome == FileOutcome.NotBuilt),
        files.Count(f => f.Outcome == FileOutcome.NotKernelCode),
        cves.Count, cves.Count(c => c.Status == CveStatus.Covered), cves.Count(c => c.Status == CveStatus.NeedsReboot),
        cves.Count(c => c.Status == CveStatus.NotAffected), cves.Count(c => c.Status == CveStatus.Unmapped));

    /// <summary>A trial's outcome depends on the patch, the exact kernel, the builder and the options that change
    /// decisions.</summary>
    private static string TrialKey(KernelTarget kernel, ChangedFile file, CatchUpRequest request) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            $"{file.PatchSha256}\n{kernel.BuildId}\n{KernelPatchBuilder.BuilderVersion}\n" +
            $"{request.MaxUnits}\n{request.SkipFidelity}")))[..32];

    [GeneratedRegex("[^A-Za-z0-9_]")]
    private static partial Regex NotIdentifier();
}
