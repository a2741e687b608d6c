using System.Data.Common;

namespace Kintsugi.Server.Storage;

/// <summary>
/// The schema, as an ordered list of migrations shared by SQLite and PostgreSQL. Types are the common
/// subset (TEXT, BIGINT, BLOB/BYTEA; times are Unix milliseconds), so one text serves both; only the
/// append-only triggers differ. A server applies the missing migrations at start, under a lock, so
/// replicas starting together over one PostgreSQL do not race.
/// </summary>
public static class Migrations
{
    public sealed record Migration(int Version, string Name, Func<Database, string> Sql);

    public static readonly IReadOnlyList<Migration> All =
    [
        new(1, "initial schema", db => $"""
            CREATE TABLE server_state (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
            INSERT INTO server_state (name, value) VALUES ('epoch', 1);

            CREATE TABLE channels (
                name TEXT PRIMARY KEY,
                position BIGINT NOT NULL UNIQUE,
                promote_after_seconds BIGINT NULL,
                min_applied BIGINT NOT NULL,
                created_at BIGINT NOT NULL);

            CREATE TABLE publisher_keys (id TEXT PRIMARY KEY, pem TEXT NOT NULL, state TEXT NOT NULL, added_at BIGINT NOT NULL);

            CREATE TABLE releases (
                id TEXT PRIMARY KEY,
                kernel_release TEXT NOT NULL,
                build_id TEXT NOT NULL,
                level BIGINT NOT NULL,
                bundle TEXT NOT NULL UNIQUE,
                size BIGINT NOT NULL,
                publisher_key TEXT NOT NULL,
                manifest TEXT NOT NULL,
                published_at BIGINT NOT NULL,
                published_by TEXT NOT NULL,
                revoked_at BIGINT NULL,
                revoked_by TEXT NULL,
                revoke_reason TEXT NULL,
                UNIQUE (build_id, level));

            CREATE TABLE release_cves (
                release_id TEXT NOT NULL REFERENCES releases(id),
                cve TEXT NOT NULL,
                severity TEXT NOT NULL,
                published TEXT NOT NULL,
                PRIMARY KEY (release_id, cve));

            CREATE TABLE promotions (
                release_id TEXT NOT NULL REFERENCES releases(id),
                channel TEXT NOT NULL REFERENCES channels(name),
                promoted_at BIGINT NOT NULL,
                promoted_by TEXT NOT NULL,
                PRIMARY KEY (release_id, channel));

            CREATE TABLE bundle_blobs (sha256 TEXT PRIMARY KEY, content {db.BlobType} NOT NULL);

            CREATE TABLE enrollment_tokens (
                id TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                channel TEXT NOT NULL REFERENCES channels(name),
                description TEXT NOT NULL,
                expires_at BIGINT NULL,
                max_uses BIGINT NULL,
                uses BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                created_by TEXT NOT NULL,
                revoked_at BIGINT NULL);

            CREATE TABLE api_tokens (
                id TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL,
                name TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                created_by TEXT NOT NULL,
                expires_at BIGINT NULL,
                revoked_at BIGINT NULL);

            CREATE TABLE machines (
                id TEXT PRIMARY KEY,
                host_machine_id TEXT NOT NULL UNIQUE,
                hostname TEXT NOT NULL,
                channel TEXT NOT NULL REFERENCES channels(name),
                credential_hash TEXT NOT NULL UNIQUE,
                kernel_release TEXT NOT NULL,
                build_id TEXT NOT NULL,
                package_version TEXT NULL,
                agent_version TEXT NOT NULL,
                state TEXT NULL,
                level BIGINT NULL,
                bundle TEXT NULL,
                effective_version TEXT NULL,
                taint BIGINT NOT NULL,
                detail TEXT NULL,
                target_release TEXT NULL,
                enrolled_at BIGINT NOT NULL,
                last_checkin_at BIGINT NULL,
                state_since BIGINT NULL,
                address TEXT NULL);
            CREATE INDEX machines_build ON machines (build_id);

            CREATE TABLE machine_levels (
                machine TEXT NOT NULL REFERENCES machines(id),
                build_id TEXT NOT NULL,
                level BIGINT NOT NULL,
                first_applied_at BIGINT NOT NULL,
                PRIMARY KEY (machine, build_id, level));

            CREATE TABLE audit_events (
                seq BIGINT PRIMARY KEY,
                at BIGINT NOT NULL,
                actor TEXT NOT NULL,
                address TEXT NULL,
                action TEXT NOT NULL,
                subject TEXT NOT NULL,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL);
            CREATE TABLE audit_head (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL);
            INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{AuditChain.GenesisHash}');
            """ + AppendOnlyTriggers(db)),
        new(2, "signed release metadata", _ => """
            CREATE TABLE release_metadata (
                build_id TEXT PRIMARY KEY,
                kernel_release TEXT NOT NULL,
                version BIGINT NOT NULL,
                document TEXT NOT NULL,
                published_at BIGINT NOT NULL,
                published_by TEXT NOT NULL);
            """),
        new(3, "signed trust-root updates", _ => """
            CREATE TABLE trust_root (
                id BIGINT PRIMARY KEY,
                version BIGINT NOT NULL,
                document TEXT NOT NULL,
                published_at BIGINT NOT NULL,
                published_by TEXT NOT NULL);
            """),
        new(4, "machine binding: boot ids, clone suspicion, re-enrollment approval, metadata freshness", _ => """
            ALTER TABLE machines ADD COLUMN boot_id TEXT NULL;
            ALTER TABLE machines ADD COLUMN previous_boot_id TEXT NULL;
            ALTER TABLE machines ADD COLUMN clone_suspected_at BIGINT NULL;
            ALTER TABLE machines ADD COLUMN clone_detail TEXT NULL;
            ALTER TABLE machines ADD COLUMN reenroll_approved_until BIGINT NULL;
            ALTER TABLE machines ADD COLUMN metadata_freshness TEXT NULL;
            """),
        // kernel_release holds a user-space release's object name; machine_objects keeps, per machine, the user-space
        // objects it maps that have releases (or a patch installed), as its agent last reported them.
        new(5, "user-space releases and the objects machines map", _ => """
            ALTER TABLE releases ADD COLUMN kind TEXT NOT NULL DEFAULT 'kernel';
            CREATE TABLE machine_objects (
                machine TEXT NOT NULL,
                build_id TEXT NOT NULL,
                object TEXT NOT NULL,
                processes BIGINT NOT NULL,
                state TEXT NOT NULL,
                level BIGINT NULL,
                bundle TEXT NULL,
                patched BIGINT NOT NULL,
                failed BIGINT NOT NULL,
                detail TEXT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (machine, build_id));
            """),
    ];

    /// <summary>The database refuses UPDATE and DELETE on the audit log; the hash chain catches whoever drops the
    /// trigger.</summary>
    private static string AppendOnlyTriggers(Database db) => db.Dialect == Dialect.Postgres
        ? """
          CREATE FUNCTION kintsugi_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
          CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION kintsugi_audit_append_only();
          """
        : """
          CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
          CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
          """;

    /// <summary>Applies every missing migration; returns the versions applied now.</summary>
    public static async Task<IReadOnlyList<int>> ApplyAsync(Database db, CancellationToken cancellation = default)
    {
        var applied = new List<int>();
        await using var connection = await db.OpenAsync(cancellation);
        if (db.Dialect == Dialect.Postgres)
            // released when the connection closes
            await connection.ExecuteAsync(null, "SELECT pg_advisory_lock(7142022)");
        await connection.ExecuteAsync(null,
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, " +
            "applied_at BIGINT NOT NULL)");
        try
        {
            foreach (var migration in All)
            {
                var exists = await connection.ScalarAsync(null,
                    "SELECT version FROM schema_migrations WHERE version = @v", ("@v", (long)migration.Version));
                if (exists is not null) continue;
                await using var transaction = await connection.BeginTransactionAsync(cancellation);
                // both providers run multi-statement text
                await connection.ExecuteAsync(transaction, migration.Sql(db));
                await connection.ExecuteAsync(transaction,
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (@v, @n, @t)",
                    ("@v", (long)migration.Version), ("@n", migration.Name),
                        ("@t", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()));
                await transaction.CommitAsync(cancellation);
                applied.Add(migration.Version);
            }
            var newest = await connection.ScalarAsync(null, "SELECT MAX(version) FROM schema_migrations");
            if (newest is not null && Convert.ToInt64(newest) > All[^1].Version)
                throw new StorageException($"{db.Description} has schema version {newest}, newer than this server " +
                    $"knows ({All[^1].Version}); run a newer kintsugi-server");
        }
        catch (DbException e)
        {
            throw new StorageException($"migrating {db.Description} failed: {e.Message}", e);
        }
        finally
        {
            if (db.Dialect == Dialect.Postgres) await connection.ExecuteAsync(null,
                "SELECT pg_advisory_unlock(7142022)");
        }
        return applied;
    }
}
