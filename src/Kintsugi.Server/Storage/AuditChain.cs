using System.Buffers.Binary;
using System.Data.Common;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Kintsugi.Server.Storage;

/// <summary>Who did something and from where: <c>token:ops-alice (operator)</c>, <c>machine:m_…</c>,
/// <c>system:promoter</c>.</summary>
public sealed record Actor(string Name, string? Address)
{
    public static Actor System(string what) => new($"system:{what}", null);
}

/// <summary>
/// The append-only audit log: every state change is one row whose hash covers its fields and the previous
/// row's hash, and a one-row head records the last sequence number and hash. Editing any row breaks its
/// own hash or its successor's link; deleting rows leaves a gap, a broken link or a head pointing past the
/// end. Whoever can rewrite the whole chain and the head (or restore an older database) is caught by the head the
/// server also keeps outside the database (<see cref="AuditWitness"/>) and by <c>audit verify --expect-head</c>
/// against a head hash noted elsewhere.
/// </summary>
public static class AuditChain
{
    public const string GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000";

    // The last event each open transaction appended, for the witness once the transaction commits.
    private static readonly ConditionalWeakTable<DbTransaction, AuditHead> appended = new();

    /// <summary>The last event <paramref name="transaction"/> appended, or null.</summary>
    public static AuditHead? Appended(DbTransaction transaction) =>
        appended.TryGetValue(transaction, out var head) ? head : null;

    /// <summary>Appends one event inside the caller's write transaction; returns its sequence number.</summary>
    public static async Task<long> AppendAsync(DbConnection connection, DbTransaction transaction, Actor actor,
        string action, string subject, Dictionary<string, string?>? detail = null, DateTimeOffset? at = null)
    {
        // Take the head's row lock first (PostgreSQL replicas queue here), then read it.
        await connection.ExecuteAsync(transaction, "UPDATE audit_head SET seq = seq WHERE id = 1");
        long headSeq; string headHash;
        await using (var command = connection.Command(transaction, "SELECT seq, hash FROM audit_head WHERE id = 1"))
        await using (var reader = await command.ExecuteReaderAsync())
        {
            if (!await reader.ReadAsync()) throw new StorageException("the audit head row is missing: the database " +
                "was altered by hand; run `kintsugi server audit verify`");
            headSeq = Convert.ToInt64(reader.GetValue(0));
            headHash = reader.GetString(1);
        }
        var when = DateTimeOffset.FromUnixTimeMilliseconds((at ?? DateTimeOffset.UtcNow).ToUnixTimeMilliseconds());
        var detailJson = JsonSerializer.Serialize(detail ?? new Dictionary<string, string?>());
        var seq = headSeq + 1;
        var hash = Hash(seq, when.ToUnixTimeMilliseconds(), actor.Name, actor.Address, action, subject, detailJson,
            headHash);
        await connection.ExecuteAsync(transaction,
            "INSERT INTO audit_events (seq, at, actor, address, action, subject, detail, prev_hash, hash) VALUES " +
                "(@s, @at, @actor, @addr, @action, @subject, @detail, @prev, @hash)",
            ("@s", seq), ("@at", when.ToUnixTimeMilliseconds()), ("@actor", actor.Name), ("@addr", actor.Address),
                ("@action", action),
            ("@subject", subject), ("@detail", detailJson), ("@prev", headHash), ("@hash", hash));
        await connection.ExecuteAsync(transaction, "UPDATE audit_head SET seq = @s, hash = @h WHERE id = 1",
            ("@s", seq), ("@h", hash));
        appended.AddOrUpdate(transaction, new AuditHead(seq, hash));
        return seq;
    }

    public static string Hash(long seq, long atMilliseconds, string actor, string? address, string action,
        string subject, string detail, string prevHash)
    {
        // Length-prefixed fields, so no two different rows serialize alike.
        using var buffer = new MemoryStream();
        var number = new byte[8];
        void Field(string? text)
        {
            var bytes = text is null ? [] : Encoding.UTF8.GetBytes(text);
            BinaryPrimitives.WriteInt64BigEndian(number, text is null ? -1 : bytes.Length);
            buffer.Write(number);
            buffer.Write(bytes);
        }
        buffer.Write("kintsugi-audit-v1"u8);
        BinaryPrimitives.WriteInt64BigEndian(number, seq); buffer.Write(number);
        BinaryPrimitives.WriteInt64BigEndian(number, atMilliseconds); buffer.Write(number);
        Field(actor); Field(address); Field(action); Field(subject); Field(detail); Field(prevHash);
        return Convert.ToHexStringLower(SHA256.HashData(buffer.ToArray()));
    }

    public static async Task<IReadOnlyList<AuditEvent>> ReadAsync(Database db, long afterSeq = 0, int limit = 1000,
        CancellationToken cancellation = default)
    {
        await using var connection = await db.OpenAsync(cancellation);
        await using var command = connection.Command(null,
            "SELECT seq, at, actor, address, action, subject, detail, prev_hash, hash FROM audit_events WHERE seq > " +
                "@after ORDER BY seq LIMIT @limit",
            ("@after", afterSeq), ("@limit", (long)limit));
        await using var reader = await command.ExecuteReaderAsync(cancellation);
        var events = new List<AuditEvent>();
        while (await reader.ReadAsync(cancellation)) events.Add(ReadEvent(reader));
        return events;
    }

    /// <summary>The newest events first (for the dashboard and <c>audit log</c>).</summary>
    public static async Task<IReadOnlyList<AuditEvent>> ReadNewestAsync(Database db, int limit, string? subject = null,
        CancellationToken cancellation = default)
    {
        await using var connection = await db.OpenAsync(cancellation);
        await using var command = connection.Command(null,
            "SELECT seq, at, actor, address, action, subject, detail, prev_hash, hash FROM audit_events " +
            (subject is null ? "" : "WHERE subject = @subject ") + "ORDER BY seq DESC LIMIT @limit",
            ("@limit", (long)limit), ("@subject", subject));
        await using var reader = await command.ExecuteReaderAsync(cancellation);
        var events = new List<AuditEvent>();
        while (await reader.ReadAsync(cancellation)) events.Add(ReadEvent(reader));
        return events;
    }

    private static AuditEvent ReadEvent(DbDataReader r) => new(
        Convert.ToInt64(r.GetValue(0)), DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(1))),
            r.GetString(2),
        r.IsDBNull(3) ? null : r.GetString(3), r.GetString(4), r.GetString(5), r.GetString(6), r.GetString(7),
            r.GetString(8));

    /// <summary>At start: whether the database contradicts the head kept outside it (rolled back, rewritten), cheaply
    /// (the head row and one event, not the whole chain).</summary>
    public static async Task<string?> CheckWitnessAsync(Database db, CancellationToken cancellation = default)
    {
        if (db.Witness is not { } witness) return null;
        if (witness.Head is not { } kept) return witness.Contradiction(0, null);
        await using var connection = await db.OpenAsync(cancellation);
        await using var command = connection.Command(null,
            "SELECT (SELECT MAX(seq) FROM audit_events), (SELECT hash FROM audit_events WHERE seq = @s)",
            ("@s", kept.Seq));
        await using var reader = await command.ExecuteReaderAsync(cancellation);
        await reader.ReadAsync(cancellation);
        var last = reader.IsDBNull(0) ? 0 : Convert.ToInt64(reader.GetValue(0));
        return witness.Contradiction(last, reader.IsDBNull(1) ? null : reader.GetString(1));
    }

    /// <summary>Reads the whole chain in order and reports every row that does not hold.</summary>
    public static async Task<AuditVerification> VerifyAsync(Database db, CancellationToken cancellation = default)
    {
        var witnessed = db.Witness?.Head?.Seq;
        string? hashAtWitness = null;
        const int MaxProblems = 100;
        var problems = new List<AuditProblem>();
        void Problem(long seq, string text)
        {
            if (problems.Count < MaxProblems) problems.Add(new AuditProblem(seq, text));
        }

        await using var connection = await db.OpenAsync(cancellation);
        long headSeq = -1; var headHash = "";
        await using (var head = connection.Command(null, "SELECT seq, hash FROM audit_head WHERE id = 1"))
        await using (var reader = await head.ExecuteReaderAsync(cancellation))
        {
            if (await reader.ReadAsync(cancellation))
            {
                headSeq = Convert.ToInt64(reader.GetValue(0));
                headHash = reader.GetString(1);
            }
            else Problem(0, "the audit head row is missing");
        }

        long expectedSeq = 1, count = 0;
        var previousHash = GenesisHash;
        await using (var command = connection.Command(null,
            "SELECT seq, at, actor, address, action, subject, detail, prev_hash, hash FROM audit_events ORDER BY seq"))
        await using (var reader = await command.ExecuteReaderAsync(cancellation))
        {
            while (await reader.ReadAsync(cancellation))
            {
                var e = ReadEvent(reader);
                count++;
                if (e.Seq != expectedSeq)
                    Problem(e.Seq, e.Seq > expectedSeq ? $"events {expectedSeq} to {e.Seq - 1} are missing (deleted)"
                        : $"sequence number {e.Seq} is out of order");
                if (e.PrevHash != previousHash)
                    Problem(e.Seq,
                        "its link to the previous event is broken (the previous event was edited, deleted or " +
                        "replaced)");
                var recomputed = Hash(e.Seq, e.At.ToUnixTimeMilliseconds(), e.Actor, e.Address, e.Action, e.Subject,
                    e.Detail, e.PrevHash);
                if (recomputed != e.Hash)
                    Problem(e.Seq, "its contents do not match its hash (the event was edited)");
                if (e.Seq == witnessed) hashAtWitness = e.Hash;
                previousHash = e.Hash;
                expectedSeq = e.Seq + 1;
            }
        }
        var lastSeq = expectedSeq - 1;
        if (headSeq >= 0)
        {
            if (headSeq > lastSeq) Problem(lastSeq + 1,
                $"the head records {headSeq} events but the log ends at {lastSeq} (events were deleted from the end)");
            else if (headSeq < lastSeq) Problem(headSeq + 1,
                $"events after {headSeq} were added outside the server (the head records {headSeq})");
            else if (headHash != previousHash) Problem(lastSeq,
                "the last event does not match the head's hash (it was edited or replaced)");
        }
        if (db.Witness?.Contradiction(lastSeq, hashAtWitness) is { } contradiction)
            Problem(witnessed ?? 0, contradiction);
        return new AuditVerification(problems.Count == 0, count, headSeq, headHash, problems);
    }
}
