using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;

namespace Kintsugi.Agent;

/// <summary>What <c>kintsugi agent check</c> found: whether this machine runs the release meant for its
/// kernel.</summary>
/// <param name="UpToDate">True when the applied level is the one offered (or nothing is offered and nothing is applied
/// that should go).</param>
/// <param name="DisabledBecause">The kill switch, when set: an out-of-date machine stays so until it is
/// cleared.</param>
public sealed record AgentCheckResult(bool UpToDate, string State, int? AppliedLevel, string? AppliedBundle,
    int? OfferedLevel, string? OfferedBundle,
    string Source, string Detail, string? DisabledBecause);

public sealed partial class MachineAgent
{
    /// <summary>The longest pause between two attempts of <see cref="CheckPatientlyAsync"/>.</summary>
    public static readonly TimeSpan PatientRetryCap = TimeSpan.FromSeconds(30);

    /// <summary>
    /// <see cref="CheckAsync"/>, waiting up to <paramref name="patience"/> for a server that cannot be reached yet
    /// or is busy (a machine whose network comes up late, a fleet enrolling at once): each attempt that fails so is
    /// retried with backoff. A refusal (the token, the credential, the server's certificate) fails at once.
    /// </summary>
    public async Task<AgentCheckResult> CheckPatientlyAsync(TimeSpan patience, CancellationToken cancellation)
    {
        var deadline = DateTime.UtcNow + patience;
        var backoff = new Backoff(PatientRetryCap);
        while (true)
        {
            try { return await CheckAsync(cancellation); }
            catch (ServerUnavailableException e)
            {
                var remaining = deadline - DateTime.UtcNow;
                if (remaining <= TimeSpan.Zero)
                    throw new ServerUnavailableException(
                        $"{e.Message} (still so after waiting {patience.TotalSeconds:0} s; the agent, once started, " +
                        "keeps retrying)", e.RetryAfter, e);
                var delay = backoff.Next(e.RetryAfter);
                if (delay > remaining) delay = remaining;
                _log($"{e.Message}; retrying in {delay.TotalSeconds:0} s (attempt {backoff.Failures + 1}, giving up " +
                     $"in {remaining.TotalSeconds:0} s)");
                await Task.Delay(delay, cancellation);
            }
        }
    }

    /// <summary>
    /// Asks the source which release this exact kernel should run (a check-in, or the offline directory's
    /// best verified bundle) and compares it with what is applied, without applying anything.
    /// </summary>
    public async Task<AgentCheckResult> CheckAsync(CancellationToken cancellation)
    {
        var status = MachineStatus.Read(_paths);
        var disabled = KillSwitch.Reason(_paths);
        if (_server is null) return CheckOffline(status, disabled);
        var credential = await EnsureEnrolledAsync(_server, cancellation);
        var response = await _server.CheckInAsync(credential, CheckInRequestFor(null, null), cancellation);
        var source = _config.Server!.ToString();
        return response.Action switch
        {
            CheckInAction.Apply when response.Release is { } release =>
                Compare(status, release.Level, release.Bundle.ToString(), source, disabled, ""),
            CheckInAction.Remove when status.Level is not null =>
            new AgentCheckResult(false, status.State, status.Level, status.Bundle, null, null, source,
                $"level {status.Level} was revoked: the agent removes it at its next check", disabled),
            _ => new AgentCheckResult(true, status.State, status.Level, status.Bundle, null, null, source,
                status.Level is null ? $"the server has no release for {RunningKernel.Release}"
                : $"level {status.Level} runs, as the server says", disabled),
        };
    }

    /// <summary>
    /// What the next offline cycle would do, by its rules: the directory's signed release metadata (read, not kept)
    /// forbids revoked levels, levels below the minimum and going down, and takes out a running level it forbids.
    /// </summary>
    private AgentCheckResult CheckOffline(MachineStatus status, string? disabled)
    {
        var directory = _config.OfflineDirectory!;
        var trust = TrustStore.Open(_config.TrustStore);
        var guard = new ReleaseGuard(StateDirectory, RunningTarget().BuildId, readOnly: true);
        var (metadata, timestamps) = OfflineSource.Statements(directory, RunningTarget().BuildId);
        var notes = metadata.SelectMany(m => guard.Offer(m, null, trust))
            .Concat(timestamps.SelectMany(t => guard.Offer(null, t, trust))).ToList();
        if (guard.Freshness == MetadataFreshness.Stale) notes.Add(guard.Describe());
        var applied = AppliedRecord();
        var running = applied is not null && RetiredKeys.Refusal(applied, trust) is null ? applied.Origin?.Level : null;
        var selection = OfflineSource.Select(directory, trust, RunningTarget(), level => guard.Refuse(level, running));
        var note = (selection.Refused.Count > 0
            ? $"; {selection.Refused.Count} bundle(s) refused ({selection.Refused[0].Reason})" : "") +
            string.Concat(notes.Select(n => "; " + n));
        if (selection.Best is { } best)
            return Compare(status, best.Level, best.Digest.ToString(), directory, disabled, note);
        if (running is not null && guard.RefuseRemove(running) is null)
            return new AgentCheckResult(false, status.State, status.Level, status.Bundle, null, null, directory,
                $"level {running} is forbidden by {guard.Describe()}: the agent removes it at its next check{note}",
                disabled);
        return new AgentCheckResult(true, status.State, status.Level, status.Bundle, null, null, directory,
            $"no bundle in {directory} for {RunningKernel.Release}{note}", disabled);
    }

    private static AgentCheckResult
        Compare(MachineStatus status, int level, string bundle, string source, string? disabled, string note)
    {
        var upToDate = status.Bundle == bundle;
        var detail = upToDate ? $"level {level} runs, the newest for {status.Release}"
            : status.Level is { } applied ? $"level {level} is offered; level {applied} runs"
            : $"level {level} is offered; nothing is applied";
        return new AgentCheckResult(upToDate, status.State, status.Level, status.Bundle, level, bundle, source,
            detail + note, disabled);
    }
}

public sealed partial class MachineAgent
{
    /// <summary>The machine id the server gave at enrollment, or null before it.</summary>
    public string? EnrolledMachine => (_identity ??= LoadIdentity())?.Machine;
}
