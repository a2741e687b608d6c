using System.Text.Json;
using System.Text.Json.Serialization;
using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;
using Kintsugi.User;

namespace Kintsugi.Agent;

/// <summary>What one pass did for one user-space object: its installed level and the outcome in every
/// process.</summary>
public sealed record UserObjectState(BuildId BuildId, string Object, int? Level, string? Bundle, PatchState State,
    IReadOnlyList<ProcessResult> Processes, string Detail)
{
    public int Patched => Processes.Count(p => p.Outcome is ProcessOutcome.Applied or ProcessOutcome.AlreadyApplied);
    public int Failed => Processes.Count(p => !p.Succeeded);
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(List<UserObjectState>))]
internal sealed partial class UserStateJson : JsonSerializerContext;

/// <summary>
/// The agent's user-space side. A verified user-space bundle is <b>installed</b> for its object (one per build-id,
/// kept as the signed file in <c>agent/user/</c>, so it is verified again before every use); every <b>pass</b> then
/// applies it to each process that maps the object with that build-id, replacing any other Kintsugi patch of that
/// object (levels are cumulative). Processes that start, restart or <c>dlopen</c> the object later are patched by the
/// next pass: passes run every <see cref="AgentConfig.UserScanInterval"/> and after every check. A patch already in a
/// process is recognised from its memory, so passes are idempotent. <b>Remove</b> reverts the object's patches in
/// every process and forgets the bundle. Signed release metadata for the object (<paramref name="guards"/>, the same
/// policy as the kernel's) rules too: a pass takes out an installed level the metadata kept for the object forbids.
/// </summary>
public sealed class UserDelivery(string directory, PatcherOptions options, Action<string> log,
    Func<BuildId, string, ReleaseGuard>? guards = null)
{
    private readonly UserPatcher _patcher = new(options);
    // A pass and a check-in's install or remove never interleave (ptrace: one tracer per process anyway).
    private readonly Lock _lock = new();

    private string StatePath => Path.Combine(directory, "state.json");

    private string BundlePath(BuildId id) => Path.Combine(directory, id + ".bundle");

    /// <summary>The installed bundles, as parsed (not yet verified), by object build-id.</summary>
    public IReadOnlyDictionary<BuildId, Bundle> Installed()
    {
        var found = new Dictionary<BuildId, Bundle>();
        if (!Directory.Exists(directory)) return found;
        foreach (var path in Directory.EnumerateFiles(directory, "*.bundle"))
        {
            try
            {
                var bundle = Bundle.ReadFile(path);
                if (bundle.Manifest.Object is { } target
                    && Path.GetFileNameWithoutExtension(path) == target.BuildId.ToString())
                    found[target.BuildId] = bundle;
            }
            catch (BundleException e) { log($"ignoring {path}: {e.Message}"); }
        }
        return found;
    }

    /// <summary>The states the last pass recorded (for <c>kintsugi status</c> and the check-in).</summary>
    public IReadOnlyList<UserObjectState> LastStates()
    {
        if (!File.Exists(StatePath)) return [];
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(StatePath), UserStateJson.Default.ListUserObjectState)
            ?? [];
        }
        catch (JsonException) { return []; }
    }

    /// <summary>Installs a verified user-space bundle for its object (replacing the one installed), then applies it
    /// everywhere.</summary>
    public UserObjectState Install(VerifiedBundle verified, TrustStore trust)
    {
        var target = verified.Manifest.Object ?? throw new AgentException("a kernel bundle is not a user-space patch");
        lock (_lock)
        {
            Directory.CreateDirectory(directory);
            AtomicFile.Write(BundlePath(target.BuildId), verified.Bundle.ToArray());
            log($"installed user-space level {verified.Manifest.CumulativeLevel} for {target}");
        }
        return Pass(trust).Single(s => s.BuildId == target.BuildId);
    }

    /// <summary>Reverts every Kintsugi patch of the object in every process that maps it, and forgets its
    /// bundle.</summary>
    public UserObjectState Remove(BuildId id, string why)
    {
        lock (_lock)
        {
            var name = Installed().GetValueOrDefault(id)?.Manifest.Object?.Name ?? id.ToString();
            var results =
                UserPatcher.ProcessesMapping(id).Select(pid => _patcher.Revert(pid, a => a.Target == id)).ToList();
            var failed = results.Where(r => !r.Succeeded).ToList();
            if (failed.Count == 0) File.Delete(BundlePath(id));
            var detail = failed.Count == 0
                ? $"{why}: reverted in {results.Count(r => r.Outcome == ProcessOutcome.Reverted)} process(es)"
                : $"{why}: revert failed in {failed.Count} process(es) ({Describe(failed)}); retried at the next pass";
            log($"{name}: {detail}");
            var state = new UserObjectState(id, name, null, null,
                failed.Count == 0 ? PatchState.Revoked : PatchState.ApplyFailed, results, detail);
            Record([state]);
            return state;
        }
    }

    /// <summary>The release-metadata guard of one object (kept with the kernel's, by build-id), or null when this
    /// delivery judges no metadata (status reads only).</summary>
    public ReleaseGuard? Guard(BuildId id, string name) => guards?.Invoke(id, name);

    /// <summary>
    /// Applies every installed bundle to every process that maps its object. A bundle that no longer verifies (its key
    /// was retired or removed from the trust store), or whose level the object's signed release metadata forbids
    /// (revoked, below the minimum), is reverted everywhere and forgotten.
    /// </summary>
    public IReadOnlyList<UserObjectState> Pass(TrustStore trust)
    {
        lock (_lock)
        {
            var states = new List<UserObjectState>();
            foreach (var (id, bundle) in Installed())
            {
                VerifiedBundle verified;
                try { verified = BundleVerifier.VerifyUser(bundle, trust, id); }
                catch (BundleException e)
                {
                    // System.Threading.Lock is re-entrant: Remove takes it again.
                    states.Add(Remove(id, $"the installed bundle no longer verifies ({e.Message})"));
                    continue;
                }
                if (Guard(id, verified.Manifest.Object!.Name)?.Forbids(verified.Manifest.CumulativeLevel) is { } why)
                {
                    states.Add(Remove(id, why));
                    continue;
                }
                states.Add(Apply(id, verified));
            }
            Record(states);
            return states;
        }
    }

    private UserObjectState Apply(BuildId id, VerifiedBundle verified)
    {
        var target = verified.Manifest.Object!;
        var level = verified.Manifest.CumulativeLevel;
        var digest = Sha256Digest.Of(verified.Bundle.ToArray()).ToString();
        UserPatch patch;
        try
        {
            patch = UserPatch.Parse(verified.Module.Span, $"the module of {verified.Bundle}");
            if (patch.Target.BuildId != id) throw new UserPatchException($"the patch inside targets build-id " +
                $"{patch.Target.BuildId}, not the bundle's {id}");
        }
        catch (UserPatchException e)
        {
            return new UserObjectState(id, target.Name, level, digest, PatchState.ApplyFailed, [], e.Message);
        }
        var results = new List<ProcessResult>();
        foreach (var pid in UserPatcher.ProcessesMapping(id))
        {
            IReadOnlyList<AppliedPatch> applied;
            try { applied = UserPatcher.List(pid); }
            catch (Exception e) when (e is UserPatchException or IOException) { continue; }   // exited meanwhile
            var others = applied.Where(a => a.Target == id && a.PatchId != patch.IdHex).ToList();
            if (others.Count == 0 && applied.Any(a => a.PatchId == patch.IdHex))
            {
                results.Add(new ProcessResult(pid, "", ProcessOutcome.AlreadyApplied, 0, 0, 0, 0, null));
                continue;
            }
            // Levels are cumulative: the level being applied replaces any other patch of this object, in the same
            // freeze (no thread runs the shipped code between the two levels).
            var result = _patcher.Apply(pid, patch, a => a.Target == id && a.PatchId != patch.IdHex);
            if (result.Outcome == ProcessOutcome.Applied)
                log($"{target.Name}: level {level} applied in process {pid} ({result.Command}), paused " +
                    $"{result.PauseMilliseconds:0.00} ms");
            else if (!result.Succeeded)
                log($"{target.Name}: level {level} not applied in process {pid} ({result.Command}): {result.Outcome} " +
                    $"{result.Message}");
            if (result.Outcome != ProcessOutcome.NotTarget) results.Add(result);
        }
        var failed = results.Where(r => !r.Succeeded).ToList();
        var patched = results.Count(r => r.Outcome is ProcessOutcome.Applied or ProcessOutcome.AlreadyApplied);
        var detail = failed.Count > 0
            ? $"level {level} runs in {patched} of {results.Count} process(es); not in {Describe(failed)} (retried " +
            $"at the next pass)"
            : results.Count == 0
            ? $"level {level} installed; no process maps {target.Name} now (new ones are patched at the next pass)"
            : $"level {level} runs in {patched} process(es)";
        return new UserObjectState(id, target.Name, level, digest,
            failed.Count > 0 ? PatchState.ApplyFailed : PatchState.Applied, results, detail);
    }

    private static string Describe(IEnumerable<ProcessResult> failed) =>
        string.Join("; ",
        failed.Take(5).Select(f => $"pid {f.Pid}: {f.Outcome}{(f.Message is null ? "" : " " + f.Message)}"));

    /// <summary>Keeps the newest state of each object (the states given replace those of the same objects).</summary>
    private void Record(IReadOnlyList<UserObjectState> states)
    {
        var merged = LastStates().Where(s => states.All(n => n.BuildId != s.BuildId)).Concat(states)
            .Where(s => s.State != PatchState.Revoked || states.Contains(s)).ToList();
        Directory.CreateDirectory(directory);
        AtomicFile.Write(StatePath,
            JsonSerializer.SerializeToUtf8Bytes(merged, UserStateJson.Default.ListUserObjectState));
    }

    /// <summary>
    /// What the check-in reports: every object a process maps (with its build-id), joined with what is installed and
    /// what the last pass did; installed objects no process maps are reported too.
    /// </summary>
    public IReadOnlyList<UserObjectReport> Report()
    {
        var installed = Installed();
        var states = LastStates().ToDictionary(s => s.BuildId);
        var reports = new List<UserObjectReport>();
        var mapped = UserPatcher.Inventory();
        foreach (var o in mapped.Take(CheckInRequest.MaxUserObjects))
            reports.Add(ReportFor(o.BuildId, o.Name, o.Processes.Count, installed, states));
        foreach (var (id, bundle) in installed)
            if (mapped.All(o => o.BuildId != id) && reports.Count < CheckInRequest.MaxUserObjects)
                reports.Add(ReportFor(id, bundle.Manifest.Object!.Name, 0, installed, states));
        return reports;
    }

    private static UserObjectReport
        ReportFor(BuildId id, string name, int processes, IReadOnlyDictionary<BuildId, Bundle> installed,
        Dictionary<BuildId, UserObjectState> states)
    {
        if (!installed.TryGetValue(id, out var bundle))
            return states.GetValueOrDefault(id) is { State: PatchState.Revoked or PatchState.ApplyFailed } gone
                ? new UserObjectReport(id, name, processes, gone.State, null, null, 0, gone.Failed,
                Truncate(gone.Detail))
                : new UserObjectReport(id, name, processes, PatchState.NothingToApply, null, null, 0, 0);
        var digest = Sha256Digest.Of(bundle.ToArray());
        var state = states.GetValueOrDefault(id);
        var current = state is not null && state.Bundle == digest.ToString();
        return new UserObjectReport(id, name, processes, current ? state!.State : PatchState.Applying,
            bundle.Manifest.CumulativeLevel, digest,
            current ? state!.Patched : 0, current ? state!.Failed : 0, current ? Truncate(state!.Detail) : null);
    }

    private static string Truncate(string text) =>
        text.Length <= CheckInRequest.MaxDetailLength ? text : text[..CheckInRequest.MaxDetailLength];
}
