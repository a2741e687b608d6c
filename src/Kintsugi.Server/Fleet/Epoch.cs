using System.Collections.Concurrent;
using System.Data.Common;
using Kintsugi.Server.Storage;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Kintsugi.Server.Fleet;

/// <summary>What a kernel build in a channel should run: the best release, and the levels revoked for that
/// build.</summary>
/// <param name="Metadata">The build's newest signed release metadata (envelope text), carried to agents unchanged, or
/// null.</param>
/// <param name="TrustRoot">The newest signed trust-root update (envelope text), carried to every agent unchanged, or
/// null.</param>
public sealed record Offer(string? ReleaseId, int Level, string? Bundle, long Size, IReadOnlySet<int> RevokedLevels,
    string? Metadata = null, string? TrustRoot = null)
{
    public bool HasRelease => ReleaseId is not null;
}

/// <summary>
/// The revocation epoch: a counter in the database moved by every revoke and promotion. Agents long-poll it
/// (<c>/api/v1/agent/events</c>). Each replica polls the database for moves made by others, and answers
/// its own at once. The per-(build, channel) offer cache lives here too: it is dropped whenever the epoch
/// moves, before any waiting agent is woken, so an agent told "the epoch moved" never gets a stale offer
/// from this replica.
/// </summary>
public sealed class Epoch(Database db, ServerOptions options, ILogger<Epoch> log) : BackgroundService
{
    private sealed class Generation(long value)
    {
        public long Value { get; } = value;
        public ConcurrentDictionary<(string Build, string Channel), Offer> Offers { get; } = new();
        public IReadOnlySet<string>? UserTargets { get; set; }
        public TaskCompletionSource Moved { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private Generation _current = new(0);
    private readonly Lock _lock = new();

    public long Current => Volatile.Read(ref _current).Value;

    public async Task InitializeAsync(CancellationToken cancellation)
    {
        await using var connection = await db.OpenAsync(cancellation);
        Observe(Convert.ToInt64(await connection.ScalarAsync(null,
            "SELECT value FROM server_state WHERE name = 'epoch'")));
    }

    /// <summary>Moves the epoch inside the caller's write transaction; call <see cref="Observe"/> with the result after
    /// commit.</summary>
    public static async Task<long> BumpAsync(DbConnection connection, DbTransaction transaction) =>
        Convert.ToInt64(await connection.ScalarAsync(transaction,
            "UPDATE server_state SET value = value + 1 WHERE name = 'epoch' RETURNING value"));

    /// <summary>Takes a (possibly) newer epoch: drops cached offers, then wakes every waiting poll.</summary>
    public void Observe(long value)
    {
        Generation old;
        lock (_lock)
        {
            old = _current;
            if (value <= old.Value) return;
            Volatile.Write(ref _current, new Generation(value));
        }
        old.Moved.TrySetResult();
    }

    /// <summary>Returns as soon as the epoch exceeds <paramref name="seen"/>, or after <paramref
    /// name="wait"/>.</summary>
    public async Task<long> WaitBeyondAsync(long seen, TimeSpan wait, CancellationToken cancellation)
    {
        var generation = Volatile.Read(ref _current);
        if (generation.Value > seen) return generation.Value;
        try { await generation.Moved.Task.WaitAsync(wait, cancellation); }
        catch (TimeoutException) { }
        return Current;
    }

    public async ValueTask<Offer> OfferAsync(string buildId, string channel, CancellationToken cancellation)
    {
        var generation = Volatile.Read(ref _current);
        if (generation.Offers.TryGetValue((buildId, channel), out var cached)) return cached;
        var offer = await LoadOfferAsync(buildId, channel, cancellation);
        // If the epoch moved meanwhile this lands in a discarded generation: never served stale.
        generation.Offers.TryAdd((buildId, channel), offer);
        return offer;
    }

    /// <summary>The build-ids of the user-space objects that have releases (cached until the epoch moves: publish moves
    /// it).</summary>
    public async ValueTask<IReadOnlySet<string>> UserTargetsAsync(CancellationToken cancellation)
    {
        var generation = Volatile.Read(ref _current);
        if (generation.UserTargets is { } cached) return cached;
        var targets = new HashSet<string>(StringComparer.Ordinal);
        await using var connection = await db.OpenAsync(cancellation);
        await using (
            var command = connection.Command(null, "SELECT DISTINCT build_id FROM releases WHERE kind = 'user'"))
        await using (var reader = await command.ExecuteReaderAsync(cancellation))
            while (await reader.ReadAsync(cancellation)) targets.Add(reader.GetString(0));
        generation.UserTargets = targets;
        return targets;
    }

    private async Task<Offer> LoadOfferAsync(string buildId, string channel, CancellationToken cancellation)
    {
        await using var connection = await db.OpenAsync(cancellation);
        string? id = null, bundle = null; int level = 0; long size = 0;
        await using (var command = connection.Command(null,
            "SELECT r.id, r.level, r.bundle, r.size FROM releases r JOIN promotions p ON p.release_id = r.id " +
            "WHERE r.build_id = @b AND p.channel = @c AND r.revoked_at IS NULL " +
            // A release signed by a retired key is never offered: agents refuse it, and the next good level is the
            // offer.
            "AND r.publisher_key NOT IN (SELECT id FROM publisher_keys WHERE state = 'retired') " +
            "ORDER BY r.level DESC LIMIT 1", ("@b", buildId), ("@c", channel)))
        await using (var reader = await command.ExecuteReaderAsync(cancellation))
        {
            if (await reader.ReadAsync(cancellation))
            {
                id = reader.GetString(0); level = (int)Convert.ToInt64(reader.GetValue(1)); bundle =
                    reader.GetString(2); size = Convert.ToInt64(reader.GetValue(3));
            }
        }
        var revoked = new HashSet<int>();
        await using (var command = connection.Command(null,
            "SELECT level FROM releases WHERE build_id = @b AND revoked_at IS NOT NULL", ("@b", buildId)))
        await using (var reader = await command.ExecuteReaderAsync(cancellation))
            while (await reader.ReadAsync(cancellation)) revoked.Add((int)Convert.ToInt64(reader.GetValue(0)));
        return new Offer(id, level, bundle, size, revoked,
            await Releases.MetadataTextAsync(connection, buildId, cancellation),
            (string?)await connection.ScalarAsync(null, "SELECT document FROM trust_root WHERE id = 1"));
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.EpochPollInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await using var connection = await db.OpenAsync(stoppingToken);
                Observe(Convert.ToInt64(await connection.ScalarAsync(null,
                    "SELECT value FROM server_state WHERE name = 'epoch'")));
            }
            catch (Exception e) when (e is StorageException or DbException)
            {
                log.LogWarning("cannot read the epoch from {Database}: {Message}", db.Description, e.Message);
            }
        }
    }
}
