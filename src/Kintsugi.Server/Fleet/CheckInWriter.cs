using System.Data.Common;
using System.Threading.Channels;
using Kintsugi.Server.Storage;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Kintsugi.Server.Fleet;

public sealed record StateChange(string? FromState, int? FromLevel, string FromBuildId);

/// <summary>The boot ids a check-in leaves on the machine, and whether it showed a second host sharing its
/// identity.</summary>
/// <param name="NewSuspicion">A clone seen now on a machine not suspected before: audited once.</param>
public sealed record BootRecord(string? BootId, string? PreviousBootId, bool CloneSeen, bool NewSuspicion);

/// <summary>One check-in's inventory update.</summary>
public sealed record CheckInRecord(
    string Machine, string KernelRelease, string BuildId, string? PackageVersion, string AgentVersion, string State,
    int? Level, string? Bundle,
    string? EffectiveVersion, long Taint, string? Detail, string? TargetRelease, long At, string? Address,
    StateChange? Change,
    BootRecord? Boot = null, string? MetadataFreshness = null, IReadOnlyList<UserObjectRecord>? User = null);

/// <summary>One user-space object of a machine as its check-in reported it (null list: the agent reports
/// none).</summary>
public sealed record UserObjectRecord(string BuildId, string Object, int Processes, string State, int? Level,
    string? Bundle, int Patched, int Failed,
    string? Detail);

/// <summary>
/// Group commit for check-ins: every check-in's inventory row (and, when its state, level or kernel changed,
/// its audit event) is written before the agent gets its answer, but many check-ins share one
/// transaction. The writer takes whatever has queued while the previous transaction ran, so under load
/// batches grow and the cost per check-in falls, and at rest a check-in waits for one small transaction.
/// </summary>
public sealed class CheckInWriter(Database db, ILogger<CheckInWriter> log) : BackgroundService
{
    private const int MaxBatch = 2000;

    private sealed record Pending(CheckInRecord Record, TaskCompletionSource Done);

    private readonly Channel<Pending> _queue =
        Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });

    public Task WriteAsync(CheckInRecord record, CancellationToken cancellation)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_queue.Writer.TryWrite(new Pending(record, done))) throw new StorageException("the server is stopping");
        return done.Task.WaitAsync(cancellation);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var batch = new List<Pending>(MaxBatch);
        // Drain what is queued even while stopping, so no accepted check-in is lost.
        while (await _queue.Reader.WaitToReadAsync(CancellationToken.None))
        {
            batch.Clear();
            while (batch.Count < MaxBatch && _queue.Reader.TryRead(out var item)) batch.Add(item);
            try
            {
                await db.WriteAsync((c, t) => WriteBatchAsync(c, t, batch));
                foreach (var p in batch) p.Done.TrySetResult();
            }
            catch (Exception e)
            {
                log.LogError(e, "writing {Count} check-ins failed", batch.Count);
                foreach (var p in batch) p.Done.TrySetException(e is StorageException ? e
                    : new StorageException($"recording the check-in failed: {e.Message}", e));
            }
            if (stoppingToken.IsCancellationRequested && _queue.Reader.Count == 0) break;
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        _queue.Writer.TryComplete();
        await base.StopAsync(cancellationToken);
    }

    private static async Task WriteBatchAsync(DbConnection c, DbTransaction t, List<Pending> batch)
    {
        await using var update = c.Command(t,
            "UPDATE machines SET kernel_release = @kr, build_id = @b, package_version = COALESCE(@pv, " +
            "package_version), agent_version = @av, " +
            "state_since = CASE WHEN state IS NULL OR state <> @st THEN @at ELSE state_since END, state = @st, level " +
            "= @lv, bundle = @bu, " +
            "effective_version = @ev, taint = @taint, detail = @d, target_release = @tr, last_checkin_at = @at, " +
            "address = @addr, " +
            "boot_id = CASE WHEN @hasboot = 1 THEN @bootid ELSE boot_id END, previous_boot_id = CASE WHEN @hasboot = " +
            "1 THEN @prevboot ELSE previous_boot_id END, " +
            "clone_suspected_at = CASE WHEN @clone = 1 THEN COALESCE(clone_suspected_at, @at) ELSE " +
            "clone_suspected_at END, " +
            "clone_detail = CASE WHEN @clone = 1 THEN @clonedetail ELSE clone_detail END, metadata_freshness = " +
            "COALESCE(@fresh, metadata_freshness) WHERE id = @id");
        string[] names = ["@kr", "@b", "@pv", "@av", "@st", "@lv", "@bu", "@ev", "@taint", "@d", "@tr", "@at", "@addr",
            "@hasboot", "@bootid", "@prevboot", "@clone", "@clonedetail", "@fresh", "@id"];
        foreach (var name in names) update.Parameters.Add(c.Parameter(update, name, null));
        static object?[] Values(CheckInRecord r) =>
            [r.KernelRelease, r.BuildId, r.PackageVersion, r.AgentVersion, r.State, (long?)r.Level, r.Bundle,
            r.EffectiveVersion, r.Taint, r.Detail, r.TargetRelease, r.At, r.Address,
             r.Boot is null ? 0L : 1L, r.Boot?.BootId, r.Boot?.PreviousBootId, r.Boot?.CloneSeen == true ? 1L : 0L,
             r.Boot?.CloneSeen == true ? CloneDetail(r) : null, r.MetadataFreshness, r.Machine];
        if (c is Npgsql.NpgsqlConnection postgres)
        {
            // One round trip for the whole batch: PostgreSQL pays per statement sent, SQLite (in-process) does not.
            await using var npgsqlBatch = new Npgsql.NpgsqlBatch(postgres, (Npgsql.NpgsqlTransaction)t);
            foreach (var (r, _) in batch)
            {
                var command = new Npgsql.NpgsqlBatchCommand(Positional(update.CommandText, names));
                foreach (var value in Values(r)) command.Parameters.Add(new Npgsql.NpgsqlParameter
                {
                    Value = value
                    ?? DBNull.Value
                });
                npgsqlBatch.BatchCommands.Add(command);
            }
            await npgsqlBatch.ExecuteNonQueryAsync();
        }
        foreach (var (r, _) in batch)
        {
            if (c is not Npgsql.NpgsqlConnection)
            {
                var values = Values(r);
                for (var i = 0; i < values.Length; i++) update.Parameters[i].Value = values[i] ?? DBNull.Value;
                await update.ExecuteNonQueryAsync();
            }
            if (r.User is not null) await WriteUserObjectsAsync(c, t, r);
            if (r.Boot is { NewSuspicion: true })
                await AuditChain.AppendAsync(c, t, new Actor($"machine:{r.Machine}", r.Address),
                    "machine.clone-suspected", $"machine:{r.Machine}", new()
                    {
                        ["bootId"] = r.Boot.BootId,
                        ["otherBootId"] = r.Boot.PreviousBootId,
                        ["detail"] = CloneDetail(r),
                    }, DateTimeOffset.FromUnixTimeMilliseconds(r.At));
            if (r.Change is null) continue;
            await AuditChain.AppendAsync(c, t, new Actor($"machine:{r.Machine}", r.Address), "machine.state",
                $"machine:{r.Machine}", new()
                {
                    ["from"] = r.Change.FromState,
                    ["to"] = r.State,
                    ["fromLevel"] = r.Change.FromLevel?.ToString(),
                    ["level"] = r.Level?.ToString(),
                    ["buildId"] = r.BuildId,
                    ["detail"] = r.Detail,
                }, DateTimeOffset.FromUnixTimeMilliseconds(r.At));
            if (r.State == PatchState.Applied.ToWire() && r.Level is { } level)
                await c.ExecuteAsync(t,
                    "INSERT INTO machine_levels (machine, build_id, level, first_applied_at) VALUES (@m, @b, @l, " +
                    "@at) ON CONFLICT (machine, build_id, level) DO NOTHING",
                    ("@m", r.Machine), ("@b", r.BuildId), ("@l", (long)level), ("@at", r.At));
        }
    }

    private sealed class ObjectStateRow
    {
        public string BuildId { get; set; } = "";
        public string State { get; set; } = "";
        public long? Level { get; set; }
    }

    /// <summary>Replaces the machine's user-space inventory; audits each object whose state or level changed.</summary>
    private static async Task WriteUserObjectsAsync(DbConnection c, DbTransaction t, CheckInRecord r)
    {
        var before = (await Dapper.SqlMapper.QueryAsync<ObjectStateRow>(c,
            "SELECT build_id, state, level FROM machine_objects WHERE machine = @m",
            new { m = r.Machine }, t)).ToDictionary(o => o.BuildId);
        await c.ExecuteAsync(t, "DELETE FROM machine_objects WHERE machine = @m", ("@m", r.Machine));
        foreach (var o in r.User!)
        {
            await c.ExecuteAsync(t,
                "INSERT INTO machine_objects (machine, build_id, object, processes, state, level, bundle, patched, " +
                "failed, detail, updated_at) " +
                "VALUES (@m, @b, @o, @p, @s, @l, @bu, @pa, @f, @d, @at)",
                ("@m", r.Machine), ("@b", o.BuildId), ("@o", o.Object), ("@p", (long)o.Processes), ("@s", o.State),
                ("@l", (long?)o.Level),
                ("@bu", o.Bundle), ("@pa", (long)o.Patched), ("@f", (long)o.Failed), ("@d", o.Detail), ("@at", r.At));
            var previous = before.GetValueOrDefault(o.BuildId);
            if (previous is null ? o.State != PatchState.NothingToApply.ToWire()
                : previous.State != o.State || previous.Level != o.Level)
                await AuditChain.AppendAsync(c, t, new Actor($"machine:{r.Machine}", r.Address), "machine.user-state",
                    $"machine:{r.Machine}", new()
                    {
                        ["object"] = o.Object,
                        ["buildId"] = o.BuildId,
                        ["from"] = previous?.State,
                        ["to"] = o.State,
                        ["fromLevel"] = previous?.Level?.ToString(),
                        ["level"] = o.Level?.ToString(),
                        ["processes"] = o.Processes.ToString(),
                        ["patched"] = o.Patched.ToString(),
                        ["detail"] = o.Detail,
                    }, DateTimeOffset.FromUnixTimeMilliseconds(r.At));
            if (o.State == PatchState.Applied.ToWire() && o.Level is { } level)
                await c.ExecuteAsync(t,
                    "INSERT INTO machine_levels (machine, build_id, level, first_applied_at) VALUES (@m, @b, @l, " +
                    "@at) " +
                    "ON CONFLICT (machine, build_id, level) DO NOTHING",
                    ("@m", r.Machine), ("@b", o.BuildId), ("@l", (long)level), ("@at", r.At));
        }
    }

    private static string CloneDetail(CheckInRecord r) =>
        $"check-ins alternate between boot ids {r.Boot!.BootId} and {r.Boot.PreviousBootId} (from " +
        $"{r.Address ?? "an unknown address"}): two hosts share this machine's identity " +
        "(a disk cloned with its credential); give the clone its own machine-id and enroll it";

    /// <summary>Rewrites @name parameters as $1, $2, … in the order given (Npgsql batches take positional
    /// parameters).</summary>
    private static string Positional(string sql, string[] names)
    {
        var ordered = names.Select((n, i) => (n, i)).OrderByDescending(x => x.n.Length);
        foreach (var (name, index) in ordered) sql = sql.Replace(name, "$" + (index + 1));
        return sql;
    }
}
