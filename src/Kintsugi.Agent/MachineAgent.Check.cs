using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;

namespace Kintsugi.Agent;

/// <summary>What <c>kintsugi agent check</c> found: whether this machine runs the release meant for its kernel.</summary>
/// <param name="UpToDate">True when the applied level is the one offered (or nothing is offered and nothing is applied that should go).</param>
/// <param name="DisabledBecause">The kill switch, when set: an out-of-date machine stays so until it is cleared.</param>
public sealed record AgentCheckResult(bool UpToDate, string State, int? AppliedLevel, string? AppliedBundle, int? OfferedLevel, string? OfferedBundle,
    string Source, string Detail, string? DisabledBecause);

public sealed partial class MachineAgent
{
    /// <summary>
    /// Asks the source which release this exact kernel should run (a check-in, or the offline directory's
    /// best verified bundle) and compares it with what is applied, without applying anything.
    /// </summary>
    public async Task<AgentCheckResult> CheckAsync(CancellationToken cancellation)
    {
        var status = MachineStatus.Read(_paths);
        var disabled = KillSwitch.Reason(_paths);
        if (_server is null)
        {
            var selection = OfflineSource.Select(_config.OfflineDirectory!, TrustStore.Open(_config.TrustStore), RunningTarget());
            var refused = selection.Refused.Count > 0 ? $"; {selection.Refused.Count} bundle(s) refused ({selection.Refused[0].Reason})" : "";
            if (selection.Best is not { } best)
                return new AgentCheckResult(true, status.State, status.Level, status.Bundle, null, null, _config.OfflineDirectory!,
                    $"no bundle in {_config.OfflineDirectory} for {RunningKernel.Release}{refused}", disabled);
            var offered = best.Digest.ToString();
            return Compare(status, best.Level, offered, _config.OfflineDirectory!, disabled, refused);
        }
        var credential = await EnsureEnrolledAsync(_server, cancellation);
        var response = await _server.CheckInAsync(credential, CheckInRequestFor(null, null), cancellation);
        var source = _config.Server!.ToString();
        return response.Action switch
        {
            CheckInAction.Apply when response.Release is { } release => Compare(status, release.Level, release.Bundle.ToString(), source, disabled, ""),
            CheckInAction.Remove when status.Level is not null => new AgentCheckResult(false, status.State, status.Level, status.Bundle, null, null, source,
                $"level {status.Level} was revoked: the agent removes it at its next check", disabled),
            _ => new AgentCheckResult(true, status.State, status.Level, status.Bundle, null, null, source,
                status.Level is null ? $"the server has no release for {RunningKernel.Release}" : $"level {status.Level} runs, as the server says", disabled),
        };
    }

    private static AgentCheckResult Compare(MachineStatus status, int level, string bundle, string source, string? disabled, string note)
    {
        var upToDate = status.Bundle == bundle;
        var detail = upToDate ? $"level {level} runs, the newest for {status.Release}"
            : status.Level is { } applied ? $"level {level} is offered; level {applied} runs" : $"level {level} is offered; nothing is applied";
        return new AgentCheckResult(upToDate, status.State, status.Level, status.Bundle, level, bundle, source, detail + note, disabled);
    }
}

public sealed partial class MachineAgent
{
    /// <summary>The machine id the server gave at enrollment, or null before it.</summary>
    public string? EnrolledMachine => (_identity ??= LoadIdentity())?.Machine;
}
