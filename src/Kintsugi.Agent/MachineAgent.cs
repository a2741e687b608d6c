using System.Text.Json;
using System.Text.Json.Serialization;
using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;

namespace Kintsugi.Agent;

/// <summary>What one check did.</summary>
/// <param name="State">The machine's state afterwards, in the shared vocabulary.</param>
/// <param name="Changed">Whether a patch was applied, reverted or removed.</param>
public sealed record CycleResult(string State, int? Level, bool Changed, string Detail, ExitCode ExitCode);

/// <summary>What the agent keeps between runs besides the credential (server mode).</summary>
public sealed record AgentIdentity(string Machine, int CheckInSeconds, int EventsWaitSeconds, long Epoch);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(AgentIdentity))]
internal sealed partial class AgentJson : JsonSerializerContext;

/// <summary>
/// <c>kintsugi agent run</c>: the runtime's steps in a loop. At start it re-applies installed patches (once
/// per boot, with the crash-loop guard) and finishes an apply interrupted in this boot; then, every check
/// interval (with jitter), it finds the release meant for this exact kernel (from the server or an offline
/// directory), verifies it (signature, digest, target build-id), applies it with atomic replace through
/// <see cref="PatchApplier"/>, checks the kernel's health, and reports the state.
/// </summary>
public sealed partial class MachineAgent
{
    public static string Version => typeof(MachineAgent).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    private readonly AgentConfig _config;
    private readonly MachinePaths _paths;
    private readonly Action<string> _log;
    private readonly PatchApplier _applier;
    private readonly UserDelivery? _user;
    private readonly ServerClient? _server;
    private AgentIdentity? _identity;
    // The check loop and the events watcher both update the identity (its epoch): one writer at a time.
    private readonly Lock _identityLock = new();
    // The events watcher polls from the epoch of a check-in, not from the 0 an enrollment starts with (which would
    // make it see "news" at once and check in twice).
    private volatile bool _checkedIn;

    /// <param name="limits">The bounds on every exchange with the server (tests tighten them).</param>
    public MachineAgent(AgentConfig config, MachinePaths paths, Action<string> log, HttpClient? http = null,
        ClientLimits? limits = null)
    {
        _config = config;
        _paths = paths;
        _log = log;
        _applier = new PatchApplier(paths, new LivepatchRuntime(log), log);
        if (config.UserPatching) _user =
            new UserDelivery(Path.Combine(StateDirectory, "user"), Kintsugi.User.PatcherOptions.Default, log,
            UserGuard);
        if (config.Server is not null)
            _server = new ServerClient(http ?? ServerClient.CreateHttpClient(config), config.Server, Version, limits);
    }

    public string StateDirectory => Path.Combine(_paths.State, "agent");
    private string CredentialPath => Path.Combine(StateDirectory, "credential");
    private string IdentityPath => Path.Combine(StateDirectory, "identity.json");
    private string IncomingDirectory => Path.Combine(StateDirectory, "incoming");

    /// <summary>Boot re-application (once per boot) and recovery of an apply interrupted in this boot.</summary>
    public void Start()
    {
        if (Directory.Exists(IncomingDirectory)) Directory.Delete(IncomingDirectory, recursive: true);
        var boot =
            new BootApplier(_paths, new LivepatchRuntime(_log), _log).Run(_config.Settle, _config.TransitionTimeout,
            RetiredKeys.BootRefusal(_config.TrustStore, _log));
        foreach (var action in boot.Actions)
            _log($"boot: {action.Patch}: {action.Action}" + (action.Detail.Length > 0 ? $" ({action.Detail})" : ""));
        if (boot.DisabledBecause is not null) return;
        if (_applier.Resume(_config.OnBug, _config.Settle, _config.TransitionTimeout) is { } resumed)
            RecordOutcome(resumed, _applier.Store.List().FirstOrDefault(r => r.Name == resumed.Name.Value)?.Origin);
    }

    /// <summary>
    /// Runs until cancelled: a check now, then one every interval with jitter; backoff while the server is
    /// unavailable. <paramref name="started"/> is called once boot re-application and recovery are done.
    /// </summary>
    public async Task RunAsync(CancellationToken cancellation, Action? started = null)
    {
        Start();
        started?.Invoke();
        var backoff = new Backoff(Interval);
        using var epochMoved = new SemaphoreSlim(0);
        var events = _server is null ? Task.CompletedTask
            : Task.Run(() => WatchEventsAsync(epochMoved, cancellation), cancellation);
        var userScan =
            _user is null ? Task.CompletedTask : Task.Run(() => ScanProcessesAsync(cancellation), cancellation);
        while (!cancellation.IsCancellationRequested)
        {
            TimeSpan delay;
            try
            {
                var result = await RunOnceAsync(cancellation);
                _log($"state {result.State}" + (result.Level is { } level ? $", level {level}" : "")
                    + (result.Detail.Length > 0 ? $": {result.Detail}" : ""));
                backoff.Reset();
                delay = Backoff.Jitter(Interval);
            }
            catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
            {
                break; // stopping: a request in flight was cancelled
            }
            catch (ServerUnavailableException e)
            {
                delay = backoff.Next(e.RetryAfter);
                _log($"{e.Message}; retrying in {delay.TotalSeconds:0} s");
            }
            catch (CredentialRefusedException e)
            {
                delay = backoff.Next();
                _log($"{e.Message}; keeping the current state, retrying in {delay.TotalSeconds:0} s" +
                     (_config.EnrollmentToken is null ? " (no enrollment token is configured to enroll again)" : ""));
            }
            catch (KintsugiException e)
            {
                delay = backoff.Next();
                _log($"error: {e.Message}; retrying in {delay.TotalSeconds:0} s");
            }
            try { await epochMoved.WaitAsync(delay, cancellation); }
            catch (OperationCanceledException) { break; }
        }
        try { await events; } catch (OperationCanceledException) { }
        try { await userScan; } catch (OperationCanceledException) { }
    }

    /// <summary>
    /// Between checks, a user-space pass every <see cref="AgentConfig.UserScanInterval"/>: processes started, restarted
    /// or that loaded a patched library since the last pass get the installed patches (no network involved).
    /// </summary>
    private async Task ScanProcessesAsync(CancellationToken cancellation)
    {
        while (!cancellation.IsCancellationRequested)
        {
            try { await Task.Delay(_config.UserScanInterval, cancellation); }
            catch (OperationCanceledException) { return; }
            try { UserPass(); }
            catch (Exception e) when (e is KintsugiException or IOException
                or UnauthorizedAccessException)
            { _log($"user-space pass: {e.Message}"); }
        }
    }

    /// <summary>Applies the installed user-space patches to every process that maps their objects (nothing when
    /// disabled).</summary>
    public IReadOnlyList<UserObjectState> UserPass()
    {
        if (_user is null || KillSwitch.Reason(_paths) is not null || _user.Installed().Count == 0) return [];
        return _user.Pass(TrustStore.Open(_config.TrustStore));
    }

    /// <summary>The user-space objects of this machine and their patch state, as the check-in reports them.</summary>
    public IReadOnlyList<UserObjectReport>? UserReports() => _user?.Report();

    /// <summary>
    /// Offline: for each object, the directory's signed release metadata for it is taken first (as for the kernel);
    /// then its highest-level bundle that verifies and that the metadata permits is installed when it is above the
    /// installed level, or when the metadata forbids the installed one (the only way down); then a pass applies what
    /// is installed and takes out what the metadata forbids.
    /// </summary>
    private IReadOnlyList<string> TakeOfflineUserBundles(TrustStore trust)
    {
        if (_user is null) return [];
        var notes = new List<string>();
        var installed = _user.Installed();
        var found = new List<(string Path, Bundle Bundle, ObjectTarget Target)>();
        foreach (var path in Directory.EnumerateFiles(_config.OfflineDirectory!, "*.bundle")
            .Order(StringComparer.Ordinal))
        {
            try
            {
                var bundle = Bundle.ReadFile(path);
                if (bundle.Manifest.Object is { } target) found.Add((path, bundle, target));
            }
            catch (BundleException e) { notes.Add($"refused {Path.GetFileName(path)}: {e.Message}"); }
        }
        var objects = found.Select(f => (f.Target.BuildId, f.Target.Name))
            .Concat(installed.Select(i => (i.Key, i.Value.Manifest.Object!.Name))).DistinctBy(o => o.Item1);
        foreach (var (id, name) in objects)
        {
            var guard = UserGuard(id, name);
            var (metadata, timestamps) = OfflineSource.Statements(_config.OfflineDirectory!, id);
            notes.AddRange(metadata.SelectMany(m => guard.Offer(m, null, trust))
                .Concat(timestamps.SelectMany(t => guard.Offer(null, t, trust))).Select(r => $"{name}: {r}"));
            var running = installed.GetValueOrDefault(id)?.Manifest.CumulativeLevel;
            foreach (var (path, bundle, _) in found.Where(f => f.Target.BuildId == id)
                .OrderByDescending(f => f.Bundle.Manifest.CumulativeLevel))
            {
                var level = bundle.Manifest.CumulativeLevel;
                if (running is { } current && current >= level && guard.Forbids(current) is null) break;
                if (guard.Refuse(level, running) is { } refused)
                {
                    notes.Add($"refused {Path.GetFileName(path)}: {refused}");
                    continue;
                }
                try
                {
                    var state = _user.Install(BundleVerifier.VerifyUser(bundle, trust, id), trust);
                    notes.Add($"{name}: {state.Detail}");
                    break;
                }
                catch (BundleException e) { notes.Add($"refused {Path.GetFileName(path)}: {e.Message}"); }
            }
        }
        notes.AddRange(UserPass().Where(s => s.State == PatchState.Revoked).Select(s => $"{s.Object}: {s.Detail}"));
        return notes;
    }

    /// <summary>
    /// Acts on the server's user-space offers, each judged by the object's signed release metadata (which travels with
    /// it) as the kernel's offer is: download, verify for the object's build-id, install and apply a permitted level;
    /// remove only when the metadata forbids the installed level. Returns what was done and whether something the
    /// server asked was refused.
    /// </summary>
    private async Task<(IReadOnlyList<string> Notes, bool Refused)>
        TakeUserOffersAsync(ServerClient server, string credential, IReadOnlyList<UserOffer>? offers, TrustStore trust,
        CancellationToken cancellation)
    {
        if (_user is null || offers is null) return ([], false);
        var notes = new List<string>();
        var refusedAny = false;
        void Refuse(string refusal)
        {
            _log(refusal);
            notes.Add(refusal);
            refusedAny = true;
        }
        var installed = _user.Installed();
        var tookMetadata = false;
        foreach (var offer in offers)
        {
            var current = installed.GetValueOrDefault(offer.BuildId);
            var name = current?.Manifest.Object?.Name ?? offer.BuildId.ToString();
            var guard = UserGuard(offer.BuildId, name);
            foreach (var refusal in guard.Offer(offer.Metadata, offer.Timestamp, trust)) Refuse($"{name}: {refusal}");
            tookMetadata |= offer.Metadata is not null;
            if (guard.Freshness == MetadataFreshness.Stale) notes.Add($"{name}: {guard.Describe()}");
            var running = current?.Manifest.CumulativeLevel;
            if (offer.Action == CheckInAction.Remove && current is not null)
            {
                if (guard.RefuseRemove(running) is { } refusedRemove) Refuse($"{name}: {refusedRemove}");
                else notes.Add(_user.Remove(offer.BuildId, "revoked by the server and by signed release metadata")
                    .Detail);
                continue;
            }
            if (offer is not { Action: CheckInAction.Apply, Release: { } release }) continue;
            if (current is not null && Sha256Digest.Of(current.ToArray()) == release.Bundle) continue;
            var what = $"user-space level {release.Level} ({release.Bundle}) for {name} (build-id {offer.BuildId})";
            if (guard.Refuse(release.Level, running) is { } refusedOffer)
            {
                Refuse($"{what} refused, nothing downloaded: {refusedOffer}");
                continue;
            }
            try
            {
                var bytes = await server.DownloadAsync(credential, release, cancellation);
                var verified = BundleVerifier.VerifyUser(Bundle.Read(bytes), trust, offer.BuildId);
                // The signed level decides, not the level the server claimed for it.
                if (guard.Refuse(verified.Manifest.CumulativeLevel, running) is { } refusedBundle)
                {
                    Refuse($"{what} refused, nothing applied: {refusedBundle}");
                    continue;
                }
                var state = _user.Install(verified, trust);
                notes.Add($"{state.Object}: {state.Detail}");
            }
            catch (BundleException e) { Refuse($"{what} refused, nothing applied: {e.Message}"); }
        }
        // Metadata that forbids an installed level takes it out even when the server offers nothing for the object.
        if (tookMetadata)
            notes.AddRange(UserPass().Where(s => s.State == PatchState.Revoked).Select(s => $"{s.Object}: {s.Detail}"));
        return (notes, refusedAny);
    }

    private TimeSpan Interval => _identity is { CheckInSeconds: > 0 } identity && _server is not null
        ? TimeSpan.FromSeconds(identity.CheckInSeconds) : _config.CheckInterval;

    /// <summary>One check: find the release meant for this kernel, verify, apply, report.</summary>
    public Task<CycleResult> RunOnceAsync(CancellationToken cancellation) =>
        _server is null ? Task.FromResult(RunOffline()) : RunWithServerAsync(_server, cancellation);

    private CycleResult RunOffline()
    {
        if (KillSwitch.Reason(_paths) is { } disabled)
            return Finish(false, $"automatic patching is disabled: {disabled}", ExitCode.Disabled);
        var rootFile = Path.Combine(_config.OfflineDirectory!, SignedTrustRoot.FileName);
        var (rootRefusals, rootChanges) =
            TakeTrustRoot(File.Exists(rootFile) ? File.ReadAllText(rootFile) : null, rootFile);
        var trust = TrustStore.Open(_config.TrustStore);
        // The directory's signed release metadata rules offline as the server's does online: no rollback, no revoked
        // level.
        var guard = Guard();
        var (metadata, timestamps) = OfflineSource.Statements(_config.OfflineDirectory!, RunningTarget().BuildId);
        var guardNotes = metadata.SelectMany(m => guard.Offer(m, null, trust))
            .Concat(timestamps.SelectMany(t => guard.Offer(null, t, trust))).ToList();
        if (guard.Freshness == MetadataFreshness.Stale) guardNotes.Add(guard.Describe());
        foreach (var note in guardNotes) _log(note);
        var applied = AppliedRecord();
        var running = applied is not null && RetiredKeys.Refusal(applied, trust) is null ? applied.Origin?.Level : null;
        var selection = OfflineSource.Select(_config.OfflineDirectory!, trust, RunningTarget(), level =>
            guard.Refuse(level, running));
        foreach (var refused in selection.Refused) _log($"refused {refused.Source}: {refused.Reason}");
        var changed = false;
        var outcome = ExitCode.Success;
        var detail = "";
        if (selection.Best is { } best)
            (changed, outcome, detail) = ApplyOffer(best);
        else if (running is not null && guard.RefuseRemove(running) is null)
        {
            // Signed metadata forbids the running level and the directory holds no allowed one: take it out.
            var removed = _applier.RemoveAll(_config.TransitionTimeout);
            changed = true;
            detail = $"level {running} is forbidden by {guard.Describe()}; removed " +
                $"{string.Join(", ", removed.DefaultIfEmpty(applied!.Name))}";
            SaveAttempt(PatchState.Revoked, null, null, detail);
        }
        else if (selection.Refused.Count == 0)
            detail = $"no bundle in {_config.OfflineDirectory} for {RunningKernel.Release} ({selection.Ignored} for " +
                $"other kernels)";
        if (selection.Refused.Count > 0 && outcome == ExitCode.Success)
        {
            var first = selection.Refused[0];
            detail = $"{selection.Refused.Count} bundle(s) refused, nothing loaded from them; " +
                $"{Path.GetFileName(first.Source)}: {first.Reason}";
            SaveAttempt(PatchState.ApplyFailed, first.Level, null, detail);
            outcome = ExitCode.InputRefused;
        }
        if (RemoveRetired(trust, outcome) is { } retired)
        {
            changed = true;
            detail = detail.Length > 0 ? $"{detail}; {retired}" : retired;
        }
        if (rootRefusals.Count > 0 && outcome == ExitCode.Success) outcome = ExitCode.InputRefused;
        var userNotes = TakeOfflineUserBundles(trust);
        if (userNotes.Count > 0) changed = true;
        string[] notes = [.. rootChanges, .. rootRefusals, .. guardNotes, .. userNotes];
        if (notes.Length > 0) detail = string.Join("; ", detail.Length > 0 ? [detail, .. notes] : notes);
        return Finish(changed, detail, outcome);
    }

    private async Task<CycleResult> RunWithServerAsync(ServerClient server, CancellationToken cancellation)
    {
        var credential = await EnsureEnrolledAsync(server, cancellation);
        var guard = Guard();
        var reported = guard.Freshness;
        UserPass();
        var userReports = UserReports();
        CheckInResponse response;
        try
        {
            response = await server.CheckInAsync(credential, CheckInRequestFor(null, null, guard, userReports),
            cancellation);
        }
        catch (CredentialRefusedException e) when (_config.EnrollmentToken is not null)
        {
            // The credential was revoked (or the machine was re-enrolled elsewhere): the token is still configured, so
            // enroll again.
            _log($"{e.Message}; enrolling again with the configured token");
            File.Delete(CredentialPath);
            // The refused credential goes along: if the server only lost track of it, it still proves this is the same
            // machine.
            credential = await EnsureEnrolledAsync(server, cancellation, proof: credential);
            response =
                await server.CheckInAsync(credential, CheckInRequestFor(null, null, guard, userReports), cancellation);
        }
        // The epoch only moves forward: an answer from a lagging replica must not trigger check-ins again.
        SaveIdentity(current => current! with
        {
            CheckInSeconds = response.CheckInSeconds,
            EventsWaitSeconds = response.EventsWaitSeconds,
            Epoch = Math.Max(current.Epoch, response.Epoch)
        });
        _checkedIn = true;
        var (rootRefusals, rootChanges) = TakeTrustRoot(response.TrustRoot, "the server");
        var trust = TrustStore.Open(_config.TrustStore);
        var refusals = rootRefusals.Concat(guard.Offer(response.Metadata, response.Timestamp, trust)).ToList();
        var notes = rootChanges.Concat(refusals).ToList();
        if (guard.Freshness == MetadataFreshness.Stale) notes.Add(guard.Describe());
        foreach (var note in notes) _log(note);
        if (KillSwitch.Reason(_paths) is { } disabled)
            return Finish(false, $"automatic patching is disabled: {disabled}", ExitCode.Disabled);

        var changed = false;
        var outcome = ExitCode.Success;
        var detail = "";
        // A level signed by a retired key claims nothing: any good level may replace it, lower ones included.
        var applied = AppliedRecord();
        var running = applied is not null && RetiredKeys.Refusal(applied, trust) is null ? applied.Origin?.Level : null;
        switch (response.Action)
        {
            case CheckInAction.Apply when response.Release is { } release:
                if (AppliedRecord()?.Origin?.Bundle == release.Bundle.ToString()) break;
                if (guard.Refuse(release.Level, running) is { } refusedOffer)
                {
                    (outcome, detail) = RefuseRelease(release, $"nothing downloaded: {refusedOffer}");
                    break;
                }
                await server.CheckInAsync(credential,
                    CheckInRequestFor(PatchState.Applying, $"applying level {release.Level}", guard), cancellation);
                try
                {
                    var bytes = await DownloadOrReportAsync(server, credential, release, running, guard, cancellation);
                    var verified = BundleVerifier.Verify(Bundle.Read(bytes), trust, RunningTarget());
                    // The signed level decides, not the level the server claimed for it.
                    if (guard.Refuse(verified.Manifest.CumulativeLevel, running) is { } refusedBundle)
                        (outcome, detail) = RefuseRelease(release, $"nothing loaded: {refusedBundle}");
                    else
                        (changed, outcome, detail) =
                        ApplyOffer(new VerifiedOffer(verified, release.Bundle, release.Url));
                }
                catch (BundleException e)
                {
                    (outcome, detail) = RefuseRelease(release, $"nothing loaded: {e.Message}");
                }
                break;
            case CheckInAction.Remove when guard.RefuseRemove(running) is { } refusedRemove:
                detail = refusedRemove;
                _log(detail);
                outcome = ExitCode.InputRefused;
                break;
            case CheckInAction.Remove:
                var removed = _applier.RemoveAll(_config.TransitionTimeout);
                changed = removed.Count > 0;
                detail = changed ? $"revoked: removed {string.Join(", ", removed)}" : "revoked: nothing was applied";
                SaveAttempt(PatchState.Revoked, null, null, detail);
                break;
        }
        if (RemoveRetired(trust, outcome) is { } retired)
        {
            changed = true;
            detail = detail.Length > 0 ? $"{detail}; {retired}" : retired;
        }
        if (notes.Count > 0) detail = string.Join("; ", detail.Length > 0 ? [detail, .. notes] : notes);
        var (userNotes, userRefused) = await TakeUserOffersAsync(server, credential, response.User, trust,
            cancellation);
        if (userRefused && outcome == ExitCode.Success) outcome = ExitCode.InputRefused;
        if (userNotes.Count > 0) detail = string.Join("; ", detail.Length > 0 ? [detail, .. userNotes] : userNotes);
        var result = Finish(changed || userNotes.Count > 0, detail, outcome);
        if (changed || outcome != ExitCode.Success || notes.Count > 0 || guard.Freshness != reported
            || userNotes.Count > 0)
            await server.CheckInAsync(credential, CheckInRequestFor(null, detail, guard,
                userNotes.Count > 0 ? UserReports() : userReports), cancellation);
        return result;
    }

    /// <summary>
    /// Applies a signed trust-root update (new keys, retirements) to the machine's trust store before anything is
    /// verified with it. Returns the refusals and the changes, for the log and the check-in.
    /// </summary>
    private (IReadOnlyList<string> Refusals, IReadOnlyList<string> Changes) TakeTrustRoot(string? text, string source)
    {
        if (text is null) return ([], []);
        try
        {
            var changes = TrustStore.Open(_config.TrustStore).Apply(SignedTrustRoot.Read(text))
                .Select(c => $"trust root: {c}").ToList();
            foreach (var change in changes) _log(change);
            return ([], changes);
        }
        catch (BundleException e)
        {
            var refusal = $"trust-root update from {source} refused: {e.Message}";
            _log(refusal);
            return ([refusal], []);
        }
    }

    /// <summary>
    /// Takes out every installed patch whose publisher key is retired (what the source offered has had its chance to
    /// replace it). Returns what was done, or null when nothing was signed by a retired key.
    /// </summary>
    private string? RemoveRetired(TrustStore trust, ExitCode outcome)
    {
        var retired = _applier.Store.List().Select(r => (Record: r, Why: RetiredKeys.Refusal(r, trust)))
            .Where(r => r.Why is not null).ToList();
        if (retired.Count == 0) return null;
        var names = retired.Select(r => r.Record.Name).ToHashSet();
        _applier.Remove(r => names.Contains(r.Name), _config.TransitionTimeout);
        var detail = $"removed {string.Join(", ", names.Order(StringComparer.Ordinal))}: " +
            $"{string.Join("; ", retired.Select(r => r.Why))}";
        _log(detail);
        // A failed apply's own record says more; otherwise the removal is the news.
        if (outcome == ExitCode.Success) SaveAttempt(PatchState.Revoked, null, null, detail);
        return detail;
    }

    /// <summary>The release-metadata guard for the running build (docs/bundle-format.md, "Release metadata").</summary>
    public ReleaseGuard Guard() => new(StateDirectory, RunningTarget().BuildId);

    /// <summary>The release-metadata guard for one user-space object: the same policy, kept by the object's
    /// build-id.</summary>
    public ReleaseGuard UserGuard(BuildId id, string name) => new(StateDirectory, id, subject: $"object {name}");

    /// <summary>
    /// Downloads an offered bundle. A download that fails midway (a stall, a dropped connection, a deadline) is
    /// reported to the server in a check-in of its own, so a server or network that stalls the machine is seen
    /// doing it (the last word would otherwise be "applying"); nothing changes here and the failure goes on to the
    /// backoff.
    /// </summary>
    private async Task<byte[]> DownloadOrReportAsync(ServerClient server, string credential, ReleaseOffer release,
        int? running, ReleaseGuard guard, CancellationToken cancellation)
    {
        try { return await server.DownloadAsync(credential, release, cancellation); }
        catch (ServerUnavailableException e)
        {
            var detail = $"download of level {release.Level} ({release.Bundle}) failed, nothing loaded" +
                (running is { } level ? $", level {level} keeps running" : "") + $": {e.Message}";
            _log(detail);
            try { await server.CheckInAsync(credential, CheckInRequestFor(null, detail, guard), cancellation); }
            catch (ServerUnavailableException report) { _log($"reporting the failed download: {report.Message}"); }
            throw new ServerUnavailableException(detail, e.RetryAfter, e);
        }
    }

    private (ExitCode Outcome, string Detail) RefuseRelease(ReleaseOffer release, string why)
    {
        var detail = $"level {release.Level} ({release.Bundle}) refused, {why}";
        _log(detail);
        SaveAttempt(PatchState.ApplyFailed, release.Level, release.Bundle.ToString(), detail);
        return (ExitCode.InputRefused, detail);
    }

    /// <summary>Applies a verified bundle unless it is what runs already or it was quarantined.</summary>
    private (bool Changed, ExitCode Outcome, string Detail) ApplyOffer(VerifiedOffer offer)
    {
        var digest = offer.Digest.ToString();
        var records = _applier.Store.List();
        if (AppliedRecord() is { } current && current.Origin?.Bundle == digest)
        {
            // Already running, for example confirmed by an apply that was interrupted before it could say so.
            if (_applier.Store.LastAttempt?.Bundle != digest)
                SaveAttempt(current.Problem is null ? PatchState.Applied : PatchState.AppliedWithBug, offer.Level,
                    digest, $"level {offer.Level} runs ({current.Name})");
            return (false, ExitCode.Success, "");
        }
        // Keyed on the module, not the bundle: the same crashing module re-signed (or re-wrapped) stays quarantined.
        var moduleDigest = offer.Bundle.Manifest.ModuleSha256.ToString();
        if (records.FirstOrDefault(r => r.BootState == BootState.Quarantined
            && (r.Sha256 == moduleDigest || r.Origin?.Bundle == digest)) is { } bad)
        {
            var why = $"level {offer.Level} ({digest}) carries module {bad.Name}, which is quarantined ({bad.Note}); " +
                $"it is not applied again automatically " +
                      $"(`kintsugi kernel retry {bad.Name}` to try it again)";
            SaveAttempt(PatchState.ApplyFailed, offer.Level, digest, why);
            return (false, ExitCode.TransitionFailed, why);
        }
        // The same module re-signed (key rotation): adopt the new bundle without reloading.
        var moduleSha = offer.Bundle.Manifest.ModuleSha256.ToString();
        if (records.FirstOrDefault(r => r.BootState == BootState.Healthy && r.Sha256 == moduleSha
            && RunningKernel.IsModuleLoaded(r.ModuleName)) is { } same)
        {
            _applier.Store.Save(same with { Origin = offer.Origin(same.Origin?.EffectiveVersion) });
            return (false, ExitCode.Success, $"level {offer.Level}: the running module, re-signed; recorded");
        }

        Directory.CreateDirectory(IncomingDirectory);
        var incoming = Path.Combine(IncomingDirectory, digest + ".ko");
        AtomicFile.Write(incoming, offer.Bundle.Module.Span);
        try
        {
            var module = ModuleFile.Read(incoming);
            if (module.Sha256 != moduleSha) throw new BundleException(BundleFailure.ModuleMismatch,
                "the module written to disk does not match the verified digest");
            FaultInjection.After(ApplyStep.Fetched);
            _log($"applying level {offer.Level} ({module.Name}) from {offer.Source}");
            var origin = offer.Origin(module[LoadedRecord.EffectiveVersionKey]);
            var outcome = _applier.Apply(module, origin, _config.OnBug, _config.Settle, _config.TransitionTimeout,
                _config.EffectiveUname);
            RecordOutcome(outcome, origin);
            return (true, ExitCode.Success, outcome.Detail);
        }
        catch (KintsugiException e) when (e is not BundleException)
        {
            var detail = $"level {offer.Level} could not be applied: {e.Message}";
            _log(detail);
            SaveAttempt(PatchState.ApplyFailed, offer.Level, digest, detail);
            return (false, e.ExitCode, detail);
        }
        finally
        {
            File.Delete(incoming);
        }
    }

    private void RecordOutcome(ApplyOutcome outcome, PatchOrigin? origin)
    {
        var state = outcome.Reverted ? PatchState.ApplyFailed : PatchStates.Parse(outcome.State);
        SaveAttempt(state, origin?.Level, origin?.Bundle, outcome.Detail);
    }

    private void SaveAttempt(PatchState outcome, int? level, string? bundle, string detail) =>
        _applier.Store.SaveAttempt(new ApplyAttempt(DateTimeOffset.UtcNow, outcome.ToWire(), level, bundle, detail));

    private InstalledPatch? AppliedRecord() =>
        _applier.Store.List().LastOrDefault(r => r.BootState is BootState.Healthy or BootState.Pending
        && r.Origin is not null && RunningKernel.IsModuleLoaded(r.ModuleName));

    private CycleResult Finish(bool changed, string detail, ExitCode code)
    {
        var status = MachineStatus.Read(_paths);
        return new CycleResult(status.State, status.Level, changed, detail, code);
    }

    private static KernelTarget RunningTarget() =>
        new(RunningKernel.Release, null, RunningKernel.BuildId ?? throw new AgentException("the running kernel's " +
        "build-id cannot be read from /sys/kernel/notes; bundles cannot be matched to it"));

    private CheckInRequest CheckInRequestFor(PatchState? state, string? detail, ReleaseGuard? guard = null,
        IReadOnlyList<UserObjectReport>? user = null)
    {
        var status = MachineStatus.Read(_paths);
        var text = detail ?? status.LastAttempt?.Detail;
        if (text is { Length: > CheckInRequest.MaxDetailLength }) text = text[..CheckInRequest.MaxDetailLength];
        return new CheckInRequest(Identity(), state ?? PatchStates.Parse(status.State), status.Level,
            status.Bundle is { } b ? Sha256Digest.Parse(b) : null, status.EffectivePackageVersion,
            (long)RunningKernel.Taint.Mask, text, Version,
            guard is null ? null : new MetadataReport(guard.Freshness.ToString().ToLowerInvariant(),
            guard.Metadata?.Metadata.Version, guard.Expires),
            RunningKernel.BootId, user);
    }

    private static KernelIdentity Identity() =>
        new(RunningKernel.Release, RunningTarget().BuildId, RunningKernel.PackageVersion);

    private async Task<string>
        EnsureEnrolledAsync(ServerClient server, CancellationToken cancellation, string? proof = null)
    {
        _identity ??= LoadIdentity();
        if (File.Exists(CredentialPath) && _identity is not null) return File.ReadAllText(CredentialPath).Trim();
        // A credential without its identity file (a state directory half restored) still proves who this machine is.
        if (File.Exists(CredentialPath)) proof ??= File.ReadAllText(CredentialPath).Trim();
        var token = _config.EnrollmentToken ?? throw new AgentException(
            $"this machine is not enrolled ({CredentialPath} is missing) and {AgentConfig.DefaultPath} has no token; " +
            $"add an enrollment token from the server's operator", ExitCode.Environment);
        var response = await server.EnrollAsync(new EnrollRequest(token, ReportedHostname(Environment.MachineName),
            MachineId(), Identity(), Version, proof), cancellation);
        Directory.CreateDirectory(StateDirectory);
        AtomicFile.WriteSecret(CredentialPath, response.Credential);
        // The epoch starts again from what this server says: enrolling again may mean the server's data was
        // reset, and an epoch kept from before would hide every revoke until the new one caught up.
        SaveIdentity(_ => new AgentIdentity(response.Machine, response.CheckInSeconds, response.EventsWaitSeconds, 0));
        _log($"enrolled as {response.Machine}");
        return response.Credential;
    }

    private async Task WatchEventsAsync(SemaphoreSlim epochMoved, CancellationToken cancellation)
    {
        var backoff = new Backoff(TimeSpan.FromMinutes(5));
        while (!cancellation.IsCancellationRequested)
        {
            try
            {
                if (_identity is null || !_checkedIn || !File.Exists(CredentialPath))
                {
                    await Task.Delay(
                    TimeSpan.FromSeconds(1), cancellation); continue;
                }
                var epoch = _identity.Epoch;
                var started = DateTime.UtcNow;
                var events = await _server!.EventsAsync(File.ReadAllText(CredentialPath).Trim(), epoch, cancellation);
                backoff.Reset();
                if (events.Epoch > epoch)
                {
                    _log($"the server's epoch moved to {events.Epoch}: checking in now");
                    SaveIdentity(current => current! with { Epoch = Math.Max(current.Epoch, events.Epoch) });
                    epochMoved.Release();
                }
                // A poll answered at once without news (a proxy that does not hold requests) must not become a busy
                // loop.
                else if (DateTime.UtcNow - started < TimeSpan.FromSeconds(1))
                    await Task.Delay(Backoff.Jitter(TimeSpan.FromSeconds(5)), cancellation);
            }
            catch (OperationCanceledException) { return; }
            catch (Exception e) when (e is KintsugiException or IOException)
            {
                // A refused credential (the machine was deleted, or the server's data reset) is news too: check in
                // now, which enrolls again with the configured token, rather than at the next hourly check-in.
                if (e is CredentialRefusedException) epochMoved.Release();
                try { await Task.Delay(backoff.Next(), cancellation); } catch (OperationCanceledException) { return; }
            }
        }
    }

    private AgentIdentity? LoadIdentity()
    {
        if (!File.Exists(IdentityPath)) return null;
        try { return JsonSerializer.Deserialize(File.ReadAllBytes(IdentityPath), AgentJson.Default.AgentIdentity); }
        catch (JsonException) { return null; }
    }

    private void SaveIdentity(Func<AgentIdentity?, AgentIdentity> change)
    {
        lock (_identityLock)
        {
            var identity = change(_identity);
            AtomicFile.Write(IdentityPath,
                JsonSerializer.SerializeToUtf8Bytes(identity, AgentJson.Default.AgentIdentity));
            _identity = identity;
        }
    }

    /// <summary>
    /// The hostname as the protocol takes it (letters, digits and <c>. - _ :</c>, at most 253): a kernel whose
    /// hostname was never set says "(none)", which the server would refuse, and the machine could never enroll.
    /// </summary>
    public static string ReportedHostname(string name)
    {
        var valid = new string(
            [.. name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' or ':' ? c : '-')]).Trim('-');
        return name == "(none)" || valid.Length == 0 ? "unnamed" : valid[..Math.Min(valid.Length, 253)];
    }

    private string MachineId()
    {
        if (File.Exists("/etc/machine-id") && File.ReadAllText("/etc/machine-id").Trim() is { Length: > 0 } id)
            return id;
        var own = Path.Combine(StateDirectory, "machine-id");
        if (!File.Exists(own)) AtomicFile.WriteText(own, Guid.NewGuid().ToString("N") + "\n");
        return File.ReadAllText(own).Trim();
    }
}
