using System.Data.Common;
using System.Text.Json;
using Dapper;
using Kintsugi.Bundles;
using Kintsugi.Server.Storage;

namespace Kintsugi.Server.Fleet;

/// <summary>
/// Releases, channels and publisher keys: publish (only bundles a trusted publisher key signed), cumulative
/// levels per kernel build, ordered channels with manual, delayed and health-gated promotion, and revoke.
/// Every change is one transaction with its audit event and, where agents must react, an epoch move.
/// </summary>
public sealed class Releases(Database db, BundleStore store, Epoch epoch, ServerOptions options)
{
    public static readonly string[] FailureStates = [PatchState.ApplyFailed.ToWire(),
        PatchState.AppliedWithBug.ToWire()];

    private sealed class ReleaseRow
    {
        public string Id { get; set; } = "";
        public string KernelRelease { get; set; } = "";
        public string BuildId { get; set; } = "";
        public long Level { get; set; }
        public string Bundle { get; set; } = "";
        public long Size { get; set; }
        public string PublisherKey { get; set; } = "";
        public string Manifest { get; set; } = "";
        public long PublishedAt { get; set; }
        public string PublishedBy { get; set; } = "";
        public long? RevokedAt { get; set; }
        public string? RevokedBy { get; set; }
        public string? RevokeReason { get; set; }
        public string Kind { get; set; } = "kernel";
    }

    private sealed class PromotionRow
    {
        public string ReleaseId { get; set; } = "";
        public string Channel { get; set; } = "";
        public long PromotedAt { get; set; }
        public string PromotedBy { get; set; } = "";
    }

    private sealed class ChannelRow
    {
        public string Name { get; set; } = "";
        public long Position { get; set; }
        public long? PromoteAfterSeconds { get; set; }
        public long MinApplied { get; set; }
    }

    private sealed class KeyRow
    {
        public string Id { get; set; } = "";
        public string Pem { get; set; } = "";
        public string State { get; set; } = "";
        public long AddedAt { get; set; }
    }

    private const string ReleaseColumns = "id, kernel_release, build_id, level, bundle, size, publisher_key, " +
        "manifest, published_at, published_by, revoked_at, revoked_by, revoke_reason, kind";

    internal static DateTimeOffset Time(long ms) => DateTimeOffset.FromUnixTimeMilliseconds(ms);

    internal static long Now() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    // ---- channels ----

    public async Task<IReadOnlyList<ChannelView>> ChannelsAsync(DbConnection? connection = null,
        DbTransaction? transaction = null)
    {
        var owned = connection is null;
        connection ??= await db.OpenAsync();
        try
        {
            var rows = await connection.QueryAsync<ChannelRow>("SELECT name, position, promote_after_seconds, " +
                "min_applied FROM channels ORDER BY position", transaction: transaction);
            return [.. rows.Select(r =>
                new ChannelView(r.Name, (int)r.Position, r.PromoteAfterSeconds, (int)r.MinApplied))];
        }
        finally { if (owned) await connection.DisposeAsync(); }
    }

    /// <summary>Creates the initial channels on an empty server.</summary>
    public async Task EnsureChannelsAsync(IReadOnlyList<string> names)
    {
        await db.WriteAsync(async (c, t) =>
        {
            if (Convert.ToInt64(await c.ScalarAsync(t, "SELECT COUNT(*) FROM channels")) > 0) return;
            for (var i = 0; i < names.Count; i++)
            {
                Validation.ChannelName(names[i]);
                // Later channels wait a day after the previous one by default and need one healthy machine.
                long? delay = i == 0 ? null : 86_400;
                await c.ExecuteAsync(t,
                    "INSERT INTO channels (name, position, promote_after_seconds, min_applied, created_at) VALUES " +
                    "(@n, @p, @d, @m, @t)",
                    ("@n", names[i]), ("@p", (long)i), ("@d", delay), ("@m", i == 0 ? 0L : 1L), ("@t", Now()));
                await AuditChain.AppendAsync(c, t, Actor.System("setup"), "channel.create", $"channel:{names[i]}",
                    new()
                    {
                        ["position"] = i.ToString(),
                        ["promoteAfterSeconds"] = delay?.ToString(),
                        ["minApplied"] = (i == 0 ? 0 : 1).ToString()
                    });
            }
        });
    }

    /// <summary>Creates a channel at the end of the order, or changes an existing channel's promotion policy.</summary>
    public async Task<ChannelView> PutChannelAsync(string name, ChannelRequest request, Actor actor)
    {
        Validation.ChannelName(name);
        if (request.PromoteAfterSeconds is < 0
            or > 366L * 86_400) throw FleetException.Invalid("promoteAfterSeconds must be between 0 and one year");
        if (request.MinApplied is < 0
            or > 1_000_000) throw FleetException.Invalid("minApplied must be between 0 and 1000000");
        long? delay = request.Manual == true ? null : request.PromoteAfterSeconds
            ?? (request.Manual == false ? 0 : null);
        return await db.WriteAsync(async (c, t) =>
        {
            var existing = await c.ScalarAsync(t, "SELECT position FROM channels WHERE name = @n", ("@n", name));
            long position;
            if (existing is null)
            {
                position = Convert.ToInt64(await c.ScalarAsync(t,
                    "SELECT COALESCE(MAX(position) + 1, 0) FROM channels"));
                await c.ExecuteAsync(t,
                    "INSERT INTO channels (name, position, promote_after_seconds, min_applied, created_at) VALUES " +
                    "(@n, @p, @d, @m, @t)",
                    ("@n", name), ("@p", position), ("@d", delay), ("@m", (long)(request.MinApplied ?? 0)),
                        ("@t", Now()));
            }
            else
            {
                position = Convert.ToInt64(existing);
                await c.ExecuteAsync(t,
                    "UPDATE channels SET promote_after_seconds = @d, min_applied = @m WHERE name = @n",
                    ("@n", name), ("@d", delay), ("@m", (long)(request.MinApplied ?? 0)));
            }
            await AuditChain.AppendAsync(c, t, actor, existing is null ? "channel.create" : "channel.update",
                $"channel:{name}",
                new()
                {
                    ["position"] = position.ToString(),
                    ["promoteAfterSeconds"] = delay?.ToString(),
                    ["minApplied"] = (request.MinApplied ?? 0).ToString()
                });
            return new ChannelView(name, (int)position, delay, request.MinApplied ?? 0);
        });
    }

    // ---- publisher keys ----

    public async Task<IReadOnlyList<PublisherKeyView>> KeysAsync()
    {
        await using var c = await db.OpenAsync();
        var rows = await c.QueryAsync<KeyRow>("SELECT id, pem, state, added_at FROM publisher_keys ORDER BY " +
            "added_at, id");
        return [.. rows.Select(r => new PublisherKeyView(r.Id, r.State, Time(r.AddedAt), r.Pem))];
    }

    public async Task<PublisherKeyView> AddKeyAsync(string pem, Actor actor)
    {
        PublisherPublicKey key;
        try { key = PublisherPublicKey.FromPem(pem); }
        catch (BundleException e) { throw FleetException.Invalid($"not a publisher public key: {e.Message}"); }
        return await db.WriteAsync(async (c, t) =>
        {
            var state = (string?)await c.ScalarAsync(t, "SELECT state FROM publisher_keys WHERE id = @id",
                ("@id", key.Id.ToString()));
            if (state == "retired") throw FleetException.Conflict($"key {key.Id} was retired and cannot be trusted " +
                $"again; generate a new publisher key");
            var now = Now();
            if (state is null)
            {
                await c.ExecuteAsync(t,
                    "INSERT INTO publisher_keys (id, pem, state, added_at) VALUES (@id, @pem, 'trusted', @t)",
                    ("@id", key.Id.ToString()), ("@pem", key.ExportPem()), ("@t", now));
                await AuditChain.AppendAsync(c, t, actor, "key.trust", $"key:{key.Id}");
            }
            return new PublisherKeyView(key.Id.ToString(), "trusted", Time(now), key.ExportPem());
        });
    }

    /// <summary>
    /// Retires a key: its releases are no longer offered (the next good level is), and the epoch moves so that agents
    /// check in at once. Agents learn of the retirement itself from a signed trust-root update (docs/security.md).
    /// </summary>
    public async Task RetireKeyAsync(string id, Actor actor)
    {
        if (!PublisherKeyId.TryParse(id, out _))
            throw FleetException.Invalid($"'{id}' is not a publisher key id (32 lowercase hex digits)");
        var moved = await db.WriteAsync(async (c, t) =>
        {
            var state = (string?)await c.ScalarAsync(t, "SELECT state FROM publisher_keys WHERE id = @id", ("@id", id))
                ?? throw FleetException.NotFound($"no publisher key {id}");
            if (state == "retired") return 0L;
            await c.ExecuteAsync(t, "UPDATE publisher_keys SET state = 'retired' WHERE id = @id", ("@id", id));
            var releases = Convert.ToInt64(await c.ScalarAsync(t,
                "SELECT COUNT(*) FROM releases WHERE publisher_key = @id AND revoked_at IS NULL", ("@id", id)));
            await AuditChain.AppendAsync(c, t, actor, "key.retire", $"key:{id}",
                new() { ["releasesNoLongerOffered"] = releases.ToString() });
            return await Epoch.BumpAsync(c, t);
        });
        epoch.Observe(moved);
    }

    /// <summary>Imports the keys of a trust-store directory (at start, from --trust).</summary>
    public async Task ImportTrustStoreAsync(string directory)
    {
        var trust = TrustStore.Open(directory);
        foreach (var key in trust.Keys)
        {
            if (key.State == KeyState.Trusted)
            {
                try { await AddKeyAsync(key.Key.ExportPem(), Actor.System("trust-import")); }
                catch (FleetException) { /* retired here already: retirement is one-way */ }
            }
            else
            {
                try { await AddKeyAsync(key.Key.ExportPem(), Actor.System("trust-import")); }
                catch (FleetException) { /* already retired */ }
                await RetireKeyAsync(key.Id.ToString(), Actor.System("trust-import"));
            }
        }
    }

    /// <summary>The fleet's trust store as the bundle library reads it, materialized from the database.</summary>
    private async Task<(TrustStore Store, string Directory)> TrustStoreAsync()
    {
        var directory = Path.Combine(Path.GetTempPath(), $"kintsugi-trust-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(directory);
        foreach (var key in await KeysAsync())
        {
            var sub = Path.Combine(directory, key.State == "retired" ? TrustStore.RetiredDirectoryName
                : TrustStore.TrustedDirectoryName);
            Directory.CreateDirectory(sub);
            await File.WriteAllTextAsync(Path.Combine(sub, key.Id + ".pem"), key.Pem);
        }
        return (TrustStore.Open(directory), directory);
    }

    // ---- releases ----

    public async Task<IReadOnlyList<ReleaseView>> ListAsync(string? buildId = null, bool includeRevoked = true)
    {
        await using var c = await db.OpenAsync();
        var sql = $"SELECT {ReleaseColumns} FROM releases" + (buildId is null ? "" : " WHERE build_id = @b")
            + " ORDER BY kernel_release, build_id, level";
        var rows = (await c.QueryAsync<ReleaseRow>(sql, new { b = buildId }))
            .Where(r => includeRevoked || r.RevokedAt is null).ToList();
        return await ViewsAsync(c, null, rows);
    }

    public async Task<ReleaseView> GetAsync(string idOrBundle, DbConnection? connection = null,
        DbTransaction? transaction = null)
    {
        var owned = connection is null;
        connection ??= await db.OpenAsync();
        try
        {
            var row = await FindRowAsync(connection, transaction, idOrBundle)
                ?? throw FleetException.NotFound($"no release '{idOrBundle}' (give a release id r_… or a bundle's " +
                $"sha256)");
            return (await ViewsAsync(connection, transaction, [row]))[0];
        }
        finally { if (owned) await connection.DisposeAsync(); }
    }

    private static async Task<ReleaseRow?> FindRowAsync(DbConnection c, DbTransaction? t, string idOrBundle)
    {
        Validation.ReleaseReference(idOrBundle);
        return await c.QuerySingleOrDefaultAsync<ReleaseRow>($"SELECT {ReleaseColumns} FROM releases WHERE id = @x " +
            $"OR bundle = @x", new { x = idOrBundle }, t);
    }

    private async Task<IReadOnlyList<ReleaseView>> ViewsAsync(DbConnection c, DbTransaction? t,
        IReadOnlyList<ReleaseRow> rows)
    {
        if (rows.Count == 0) return [];
        var promotions = (await c.QueryAsync<PromotionRow>("SELECT p.release_id, p.channel, p.promoted_at, " +
            "p.promoted_by FROM promotions p JOIN channels ch ON ch.name = p.channel ORDER BY ch.position",
            transaction: t))
            .GroupBy(p => p.ReleaseId).ToDictionary(g => g.Key, g => g.ToList());
        var views = new List<ReleaseView>(rows.Count);
        foreach (var r in rows)
        {
            var manifest = ManifestFixes(r.Manifest);
            var health = await HealthAsync(c, t, r.Id, r.BuildId, (int)r.Level, channel: null);
            // The kernel_release column holds a user-space release's object name: the view says which it is.
            var user = r.Kind == ReleaseKinds.User;
            views.Add(new ReleaseView(r.Id, r.Kind, user ? null : r.KernelRelease, user ? r.KernelRelease : null,
                r.BuildId, (int)r.Level, r.Bundle, r.Size, r.PublisherKey, Time(r.PublishedAt), r.PublishedBy,
                r.RevokedAt is null ? null
                    : new RevocationView(Time(r.RevokedAt.Value), r.RevokedBy ?? "", r.RevokeReason ?? ""),
                [.. promotions.GetValueOrDefault(r.Id, [])
                    .Select(p => new PromotionView(p.Channel, Time(p.PromotedAt), p.PromotedBy))],
                manifest, health));
        }
        return views;
    }

    private static IReadOnlyList<FixView> ManifestFixes(string manifestJson)
    {
        using var document = JsonDocument.Parse(manifestJson);
        var fixes = new List<FixView>();
        foreach (var fix in document.RootElement.GetProperty("fixes").EnumerateArray())
            fixes.Add(new FixView(fix.GetProperty("id").GetString()!,
                [.. fix.GetProperty("cves").EnumerateArray()
                    .Select(cve =>
                    new CveView(cve.GetProperty("id").GetString()!, cve.GetProperty("severity").GetString()!,
                    cve.GetProperty("published").GetString()!))],
                fix.GetProperty("description").GetString()!));
        return fixes;
    }

    /// <summary>Machines that run the release and report <c>applied</c> (in one channel, or anywhere), and machines
    /// that failed it anywhere.</summary>
    internal static async Task<ReleaseHealth> HealthAsync(DbConnection c, DbTransaction? t, string releaseId,
        string buildId, int level, string? channel)
    {
        var applied = Convert.ToInt64(await c.ScalarAsync(t,
            "SELECT COUNT(*) FROM machines WHERE build_id = @b AND level = @l AND state = 'applied'"
                + (channel is null ? "" : " AND channel = @c"),
            ("@b", buildId), ("@l", (long)level), ("@c", channel)));
        var failed = Convert.ToInt64(await c.ScalarAsync(t,
            "SELECT COUNT(*) FROM machines WHERE build_id = @b AND (level = @l OR target_release = @r) AND state IN " +
                "('apply-failed', 'applied-with-bug')",
            ("@b", buildId), ("@l", (long)level), ("@r", releaseId)));
        return new ReleaseHealth((int)applied, (int)failed);
    }

    /// <summary>
    /// Publishes a signed bundle: it must parse, verify against the fleet's trusted publisher keys, and carry
    /// a level above every level published for its kernel build. The release enters the first channel.
    /// Publishing the same bytes again is a no-op that returns the existing release.
    /// </summary>
    public async Task<PublishResult> PublishAsync(byte[] bytes, Actor actor)
    {
        Bundle bundle;
        try { bundle = Bundle.Read(bytes); }
        catch (BundleException e) { throw FleetException.Invalid($"not a valid bundle: {e.Message}"); }
        return await PublishAsync(bundle, actor);
    }

    /// <summary>Publishes a bundle already read (an import reads each from its spooled file): its own bytes are
    /// hashed and stored, not copied.</summary>
    public async Task<PublishResult> PublishAsync(Bundle bundle, Actor actor)
    {
        var bytes = bundle.Bytes;
        var (trust, trustDirectory) = await TrustStoreAsync();
        try { BundleVerifier.Verify(bundle, trust); }
        catch (BundleException e)
        {
            throw FleetException.Unverified($"the bundle does not verify against this server's trusted publisher " +
                $"keys: {e.Message}");
        }
        finally { Directory.Delete(trustDirectory, recursive: true); }

        var digest = Sha256Digest.Of(bytes.Span);
        var manifest = bundle.Manifest;
        var buildId = manifest.TargetBuildId.ToString();
        var level = manifest.CumulativeLevel;
        var (result, newEpoch) = await db.WriteAsync(async (c, t) =>
        {
            var existing = await c.QuerySingleOrDefaultAsync<ReleaseRow>($"SELECT {ReleaseColumns} FROM releases " +
                $"WHERE bundle = @d", new { d = digest.ToString() }, t);
            if (existing is not null) return (new PublishResult(false, await GetAsync(existing.Id, c, t)), 0L);
            var clash = await c.QuerySingleOrDefaultAsync<ReleaseRow>($"SELECT {ReleaseColumns} FROM releases WHERE " +
                $"build_id = @b AND level = @l",
                new { b = buildId, l = (long)level }, t);
            if (clash is not null)
            {
                if (IsRotation(clash, bundle))
                    return (new PublishResult(true, await ResignAsync(c, t, clash, bundle, bytes, digest, actor)),
                        await Epoch.BumpAsync(c, t));
                throw FleetException.Conflict($"level {level} for build {buildId} is already published (bundle " +
                    $"{clash.Bundle}); a corrected patch is published as a higher level" +
                    " (the same module re-signed by another trusted key replaces it: a key rotation)");
            }
            var highest =
                await c.ScalarAsync(t, "SELECT MAX(level) FROM releases WHERE build_id = @b", ("@b", buildId));
            if (highest is not null && Convert.ToInt64(highest) > level)
                throw FleetException.Conflict($"level {level} is below level {highest}, already published for build " +
                    $"{buildId}; cumulative levels only go up (publish level {Convert.ToInt64(highest) + 1})");
            var channels = (await ChannelsAsync(c, t)).ToList();
            if (channels.Count == 0) throw FleetException.Conflict("the server has no channels; create one first " +
                "(kintsugi server channels set NAME)");

            var id = "r_" + digest.ToString()[..16];
            var now = Now();
            await store.PutAsync(digest, bytes, c, t);
            await c.ExecuteAsync(t,
                $"INSERT INTO releases ({ReleaseColumns}) VALUES (@id, @kr, @b, @l, @d, @size, @key, @m, @at, @by, " +
                $"NULL, NULL, NULL, @kind)",
                ("@id", id), ("@kr", manifest.TargetName), ("@b", buildId), ("@l", (long)level),
                    ("@d", digest.ToString()), ("@size", (long)bytes.Length),
                ("@key", bundle.KeyId.ToString()),
                    ("@m", System.Text.Encoding.UTF8.GetString(bundle.ManifestJson.Span)), ("@at", now),
                    ("@by", actor.Name),
                    ("@kind", manifest.Kind == BundleKind.User ? ReleaseKinds.User : ReleaseKinds.Kernel));
            foreach (var cve in manifest.Fixes.SelectMany(f => f.Cves).DistinctBy(x => x.Id))
                await c.ExecuteAsync(t,
                    "INSERT INTO release_cves (release_id, cve, severity, published) VALUES (@r, @c, @s, @p)",
                    ("@r", id), ("@c", cve.Id.Value), ("@s", cve.Severity.ToString().ToLowerInvariant()),
                        ("@p", cve.Published.ToString("yyyy-MM-dd")));
            await AuditChain.AppendAsync(c, t, actor, "release.publish", $"release:{id}", new()
            {
                [manifest.Kind == BundleKind.User ? "object" : "kernel"] = manifest.TargetName,
                ["buildId"] = buildId,
                ["level"] = level.ToString(),
                ["bundle"] = digest.ToString(),
                ["publisherKey"] = bundle.KeyId.ToString(),
                ["cves"] = string.Join(",", manifest.Cves.Select(x => x.Value)),
            });
            await InsertPromotionAsync(c, t, id, channels[0].Name, actor, "published");
            var moved = await Epoch.BumpAsync(c, t);
            return (new PublishResult(true, await GetAsync(id, c, t)), moved);
        });
        epoch.Observe(newEpoch);
        return result;
    }

    /// <summary>A key rotation: the very module of a published level, re-signed by another publisher key.</summary>
    private static bool IsRotation(ReleaseRow published, Bundle bundle)
    {
        using var manifest = JsonDocument.Parse(published.Manifest);
        return manifest.RootElement.TryGetProperty("moduleSha256", out var module)
            && module.GetString() == bundle.Manifest.ModuleSha256.ToString()
            && published.PublisherKey != bundle.KeyId.ToString();
    }

    /// <summary>
    /// Replaces a release's bundle by the same module re-signed (a key rotation): the release keeps its id, level,
    /// channels and revocation; machines running the old bundle are offered the new one and adopt it without a reload.
    /// </summary>
    private async Task<ReleaseView> ResignAsync(DbConnection c, DbTransaction t, ReleaseRow published, Bundle bundle,
        ReadOnlyMemory<byte> bytes, Sha256Digest digest, Actor actor)
    {
        await store.PutAsync(digest, bytes, c, t);
        await c.ExecuteAsync(t,
            "UPDATE releases SET bundle = @d, size = @size, publisher_key = @key, manifest = @m WHERE id = @id",
            ("@d", digest.ToString()), ("@size", (long)bytes.Length), ("@key", bundle.KeyId.ToString()),
            ("@m", System.Text.Encoding.UTF8.GetString(bundle.ManifestJson.Span)), ("@id", published.Id));
        await c.ExecuteAsync(t, "DELETE FROM release_cves WHERE release_id = @r", ("@r", published.Id));
        foreach (var cve in bundle.Manifest.Fixes.SelectMany(f => f.Cves).DistinctBy(x => x.Id))
            await c.ExecuteAsync(t,
                "INSERT INTO release_cves (release_id, cve, severity, published) VALUES (@r, @c, @s, @p)",
                ("@r", published.Id), ("@c", cve.Id.Value), ("@s", cve.Severity.ToString().ToLowerInvariant()),
                ("@p", cve.Published.ToString("yyyy-MM-dd")));
        await AuditChain.AppendAsync(c, t, actor, "release.resign", $"release:{published.Id}", new()
        {
            ["level"] = published.Level.ToString(),
            ["buildId"] = published.BuildId,
            ["fromBundle"] = published.Bundle,
            ["bundle"] = digest.ToString(),
            ["fromPublisherKey"] = published.PublisherKey,
            ["publisherKey"] = bundle.KeyId.ToString(),
        });
        return await GetAsync(published.Id, c, t);
    }

    private static async Task InsertPromotionAsync(DbConnection c, DbTransaction t, string releaseId, string channel,
        Actor actor, string reason)
    {
        await c.ExecuteAsync(t,
            "INSERT INTO promotions (release_id, channel, promoted_at, promoted_by) VALUES (@r, @c, @t, @by)",
            ("@r", releaseId), ("@c", channel), ("@t", Now()), ("@by", actor.Name));
        await AuditChain.AppendAsync(c, t, actor, "release.promote", $"release:{releaseId}",
            new() { ["channel"] = channel, ["reason"] = reason });
    }

    /// <summary>
    /// Manual promotion: into <paramref name="request"/>'s channel (default: the next one), through any
    /// channels before it, regardless of delays and health gates (an operator's decision, audited as such).
    /// </summary>
    public async Task<PromoteResult> PromoteAsync(string idOrBundle, PromoteRequest request, Actor actor)
    {
        if (request.Channel is not null) Validation.ChannelName(request.Channel);
        var reason = Validation.OptionalText("reason", request.Reason, 512) ?? "manual";
        var (result, moved) = await db.WriteAsync(async (c, t) =>
        {
            var row = await FindRowAsync(c, t, idOrBundle)
                ?? throw FleetException.NotFound($"no release '{idOrBundle}'");
            if (row.RevokedAt is not null) throw FleetException.Conflict($"release {row.Id} was revoked; a revoked " +
                $"release cannot be promoted (publish a new level)");
            var channels = (await ChannelsAsync(c, t)).ToList();
            var inChannels = (await c.QueryAsync<string>("SELECT channel FROM promotions WHERE release_id = @r",
                new { r = row.Id }, t)).ToHashSet();
            int targetIndex;
            if (request.Channel is null)
            {
                var highest = channels.FindLastIndex(ch => inChannels.Contains(ch.Name));
                if (highest == channels.Count
                    - 1) throw FleetException.Conflict($"release {row.Id} is already in the last channel, " +
                    $"{channels[^1].Name}");
                targetIndex = highest + 1;
            }
            else
            {
                targetIndex = channels.FindIndex(ch => ch.Name == request.Channel);
                if (targetIndex < 0) throw FleetException.NotFound($"no channel '{request.Channel}' (channels: " +
                    $"{string.Join(", ", channels.Select(ch => ch.Name))})");
            }
            var promoted = new List<string>();
            for (var i = 0; i <= targetIndex; i++)
            {
                if (inChannels.Contains(channels[i].Name)) continue;
                await InsertPromotionAsync(c, t, row.Id, channels[i].Name, actor, reason);
                promoted.Add(channels[i].Name);
            }
            var newEpoch = promoted.Count > 0 ? await Epoch.BumpAsync(c, t) : 0;
            return (new PromoteResult(promoted, await GetAsync(row.Id, c, t)), newEpoch);
        });
        epoch.Observe(moved);
        return result;
    }

    /// <summary>Pulls a release fleet-wide: agents fall back to the best earlier level (or remove) on their next
    /// event.</summary>
    public async Task<ReleaseView> RevokeAsync(string idOrBundle, RevokeRequest request, Actor actor)
    {
        var reason = Validation.RequiredText("reason", request.Reason, 512);
        var (view, moved) = await db.WriteAsync(async (c, t) =>
        {
            var row = await FindRowAsync(c, t, idOrBundle)
                ?? throw FleetException.NotFound($"no release '{idOrBundle}'");
            if (row.RevokedAt is not null) return (await GetAsync(row.Id, c, t), 0L);
            await c.ExecuteAsync(t,
                "UPDATE releases SET revoked_at = @t, revoked_by = @by, revoke_reason = @why WHERE id = @id",
                ("@t", Now()), ("@by", actor.Name), ("@why", reason), ("@id", row.Id));
            await AuditChain.AppendAsync(c, t, actor, "release.revoke", $"release:{row.Id}",
                new() { ["reason"] = reason, ["level"] = row.Level.ToString(), ["buildId"] = row.BuildId });
            var newEpoch = await Epoch.BumpAsync(c, t);
            return (await GetAsync(row.Id, c, t), newEpoch);
        });
        epoch.Observe(moved);
        return view;
    }

    // ---- signed trust-root updates ----

    private sealed class TrustRootRow
    {
        public long Version { get; set; }
        public string Document { get; set; } = "";
        public long PublishedAt { get; set; }
        public string PublishedBy { get; set; } = "";
    }

    private static TrustRootView TrustRootView(TrustRootRow row, IReadOnlyList<string> changes)
    {
        var root = SignedTrustRoot.Read(row.Document);
        return new TrustRootView(row.Version, root.KeyId.ToString(), [.. root.Trusted.Select(k => k.Id.ToString())],
            [.. root.Retired.Select(k => k.Id.ToString())],
            [.. root.TimestampKeys.Select(k => k.Id.ToString())], Time(row.PublishedAt), row.PublishedBy, row.Document,
            changes);
    }

    public async Task<TrustRootView> TrustRootAsync()
    {
        await using var c = await db.OpenAsync();
        var row = await c.QuerySingleOrDefaultAsync<TrustRootRow>("SELECT version, document, published_at, " +
            "published_by FROM trust_root WHERE id = 1")
            ?? throw FleetException.NotFound("no trust-root update has been published");
        return TrustRootView(row, []);
    }

    /// <summary>
    /// Stores a trust-root update (signed offline by a root key) for every agent's next check-in, and applies it to
    /// this server's publisher keys in the same transaction: the keys it retires are retired here (their releases are
    /// offered no more), the keys it trusts are trusted. It must carry a higher version than the stored one (the same
    /// document again is a no-op). When the server's trust directory pins root keys, the signature must verify against
    /// them; agents always verify it against their own.
    /// </summary>
    public async Task<(TrustRootView View, bool Created)> PublishTrustRootAsync(string text, Actor actor)
    {
        SignedTrustRoot update;
        try { update = SignedTrustRoot.Read(text); }
        catch (BundleException e) { throw FleetException.Invalid($"not a valid trust-root update: {e.Message}"); }
        if (options.TrustDirectory is { } directory && TrustStore.Open(directory) is { RootKeys.Count: > 0 } pinned)
        {
            try { update.Verify(pinned); }
            catch (BundleException e)
            {
                throw FleetException.Unverified($"the trust-root update does not verify " +
                    $"against this server's root keys: {e.Message}");
            }
        }
        var (result, moved) = await db.WriteAsync(async (c, t) =>
        {
            var existing = await c.QuerySingleOrDefaultAsync<TrustRootRow>("SELECT version, document, published_at, " +
                "published_by FROM trust_root WHERE id = 1", transaction: t);
            if (existing is not null)
            {
                if (existing.Document == update.Text) return ((TrustRootView(existing, []), false), 0L);
                if (existing.Version >= update.Root.Version)
                    throw FleetException.Conflict($"trust-root version {existing.Version} is already stored; sign a " +
                        $"version above it (not {update.Root.Version})");
            }
            var changes = new List<string>();
            var now = Now();
            foreach (var key in update.Retired)
            {
                var state = (string?)await c.ScalarAsync(t, "SELECT state FROM publisher_keys WHERE id = @id",
                    ("@id", key.Id.ToString()));
                if (state == "retired") continue;
                if (state is null)
                    await c.ExecuteAsync(t, "INSERT INTO publisher_keys (id, pem, state, added_at) VALUES (@id, " +
                        "@pem, 'retired', @t)", ("@id", key.Id.ToString()), ("@pem", key.ExportPem()), ("@t", now));
                else
                    await c.ExecuteAsync(t, "UPDATE publisher_keys SET state = 'retired' WHERE id = @id",
                    ("@id", key.Id.ToString()));
                await AuditChain.AppendAsync(c, t, actor, "key.retire", $"key:{key.Id}",
                    new() { ["trustRootVersion"] = update.Root.Version.ToString() });
                changes.Add($"retired key {key.Id}");
            }
            foreach (var key in update.Trusted)
            {
                if (await c.ScalarAsync(t, "SELECT state FROM publisher_keys WHERE id = @id",
                    ("@id", key.Id.ToString())) is not null) continue;
                await c.ExecuteAsync(t, "INSERT INTO publisher_keys (id, pem, state, added_at) VALUES (@id, @pem, " +
                    "'trusted', @t)", ("@id", key.Id.ToString()), ("@pem", key.ExportPem()), ("@t", now));
                await AuditChain.AppendAsync(c, t, actor, "key.trust", $"key:{key.Id}",
                    new() { ["trustRootVersion"] = update.Root.Version.ToString() });
                changes.Add($"trusted key {key.Id}");
            }
            await c.ExecuteAsync(t, existing is null
                    ? "INSERT INTO trust_root (id, version, document, published_at, published_by) VALUES (1, @v, @d, " +
                    "@t, @by)"
                    : "UPDATE trust_root SET version = @v, document = @d, published_at = @t, published_by = @by " +
                    "WHERE id = 1",
                ("@v", update.Root.Version), ("@d", update.Text), ("@t", now), ("@by", actor.Name));
            await AuditChain.AppendAsync(c, t, actor, "trust-root.publish", $"trust-root:{update.Root.Version}", new()
            {
                ["rootKey"] = update.KeyId.ToString(),
                ["trusted"] = string.Join(",", update.Trusted.Select(k => k.Id)),
                ["retired"] = string.Join(",", update.Retired.Select(k => k.Id)),
                ["timestamp"] = string.Join(",", update.TimestampKeys.Select(k => k.Id)),
            });
            var row = new TrustRootRow
            {
                Version = update.Root.Version,
                Document = update.Text,
                PublishedAt = now,
                PublishedBy = actor.Name
            };
            return ((TrustRootView(row, changes), true), await Epoch.BumpAsync(c, t));
        });
        epoch.Observe(moved);
        return result;
    }

    // ---- signed release metadata ----

    private sealed class MetadataRow
    {
        public string BuildId { get; set; } = "";
        public string KernelRelease { get; set; } = "";
        public long Version { get; set; }
        public string Document { get; set; } = "";
        public long PublishedAt { get; set; }
        public string PublishedBy { get; set; } = "";
    }

    /// <summary>The newest signed release metadata of a build, as stored (the envelope text), or null.</summary>
    public static async Task<string?> MetadataTextAsync(DbConnection c, string buildId,
        CancellationToken cancellation = default) =>
        (string?)await c.ScalarAsync(null, "SELECT document FROM release_metadata WHERE build_id = @b",
            ("@b", buildId));

    public async Task<ReleaseMetadataView> MetadataAsync(string buildId)
    {
        if (!BuildId.TryParse(buildId, out _)) throw FleetException.Invalid($"'{buildId}' is not a build-id");
        await using var c = await db.OpenAsync();
        var row = await c.QuerySingleOrDefaultAsync<MetadataRow>("SELECT build_id, kernel_release, version, " +
            "document, published_at, published_by FROM release_metadata WHERE build_id = @b",
            new { b = buildId.ToLowerInvariant() })
                ?? throw FleetException.NotFound($"no signed release metadata for build {buildId}");
        return MetadataView(row, []);
    }

    private static ReleaseMetadataView MetadataView(MetadataRow row, IReadOnlyList<string> revoked)
    {
        var m = SignedReleaseMetadata.Read(row.Document);
        // The document says what it is for; the stored kernel_release column holds either kind's name.
        var (kind, kernel, @object) = m.Metadata.Object is { } o
            ? (ReleaseKinds.User, (string?)null, o.Name)
            : (ReleaseKinds.Kernel, m.Metadata.Target!.Release.Value, (string?)null);
        return new ReleaseMetadataView(kind, kernel, @object, row.BuildId, row.Version, m.Metadata.CurrentLevel,
            m.Metadata.MinimumLevel, m.Metadata.RevokedLevels,
            m.Metadata.Expires, m.KeyId.ToString(), Time(row.PublishedAt), row.PublishedBy, row.Document, revoked);
    }

    /// <summary>
    /// Stores the publisher's signed release metadata for a build: it must verify against the fleet's trusted
    /// publisher keys and carry a higher version than the stored one (the same document again is a no-op).
    /// Releases it revokes or puts below the minimum are revoked here too, in the same transaction, and the
    /// epoch moves so agents fetch it at once. The server cannot make or alter such a document; it only
    /// carries it, so a machine can check that a rollback or a removal was the publisher's decision.
    /// </summary>
    public async Task<(ReleaseMetadataView View, bool Created)> PublishMetadataAsync(string text, Actor actor)
    {
        SignedReleaseMetadata signed;
        try { signed = SignedReleaseMetadata.Read(text); }
        catch (BundleException e) { throw FleetException.Invalid($"not valid release metadata: {e.Message}"); }
        var (trust, trustDirectory) = await TrustStoreAsync();
        try { signed.Verify(trust); }
        catch (BundleException e)
        {
            throw FleetException.Unverified($"the release metadata does not verify against this server's trusted " +
                $"publisher keys: {e.Message}");
        }
        finally { Directory.Delete(trustDirectory, recursive: true); }
        var m = signed.Metadata;
        var buildId = m.BuildId.ToString();
        var (result, moved) = await db.WriteAsync(async (c, t) =>
        {
            var existing = await c.QuerySingleOrDefaultAsync<MetadataRow>("SELECT build_id, kernel_release, version, " +
                "document, published_at, published_by FROM release_metadata WHERE build_id = @b",
                new { b = buildId }, t);
            if (existing is not null)
            {
                if (existing.Document == signed.Text) return ((MetadataView(existing, []), false), 0L);
                if (existing.Version >= m.Version)
                    throw FleetException.Conflict($"release metadata version {existing.Version} is already stored " +
                        $"for build {buildId}; sign a version above it (not {m.Version})");
            }
            var now = Now();
            if (existing is null)
                await c.ExecuteAsync(t,
                    "INSERT INTO release_metadata (build_id, kernel_release, version, document, published_at, " +
                    "published_by) VALUES (@b, @kr, @v, @d, @t, @by)",
                    ("@b", buildId), ("@kr", m.TargetName), ("@v", m.Version), ("@d", signed.Text),
                        ("@t", now), ("@by", actor.Name));
            else
                await c.ExecuteAsync(t,
                    "UPDATE release_metadata SET kernel_release = @kr, version = @v, document = @d, published_at = " +
                    "@t, published_by = @by WHERE build_id = @b",
                    ("@b", buildId), ("@kr", m.TargetName), ("@v", m.Version), ("@d", signed.Text),
                        ("@t", now), ("@by", actor.Name));
            var reason = $"signed release metadata version {m.Version}";
            var revoked = new List<string>();
            foreach (var row in await c.QueryAsync<ReleaseRow>($"SELECT {ReleaseColumns} FROM releases WHERE " +
                $"build_id = @b AND revoked_at IS NULL", new { b = buildId }, t))
            {
                if (m.Forbids((int)row.Level) is null || row.Level > m.CurrentLevel) continue;
                await c.ExecuteAsync(t,
                    "UPDATE releases SET revoked_at = @t, revoked_by = @by, revoke_reason = @why WHERE id = @id",
                    ("@t", now), ("@by", actor.Name), ("@why", reason), ("@id", row.Id));
                await AuditChain.AppendAsync(c, t, actor, "release.revoke", $"release:{row.Id}",
                    new() { ["reason"] = reason, ["level"] = row.Level.ToString(), ["buildId"] = buildId });
                revoked.Add(row.Id);
            }
            await AuditChain.AppendAsync(c, t, actor, "release.metadata", $"build:{buildId}", new()
            {
                ["version"] = m.Version.ToString(),
                ["currentLevel"] = m.CurrentLevel.ToString(),
                ["minimumLevel"] = m.MinimumLevel.ToString(),
                ["revokedLevels"] = string.Join(",", m.RevokedLevels),
                ["expires"] = m.Expires.ToString("O"),
                ["publisherKey"] = signed.KeyId.ToString(),
            });
            var row2 = new MetadataRow
            {
                BuildId = buildId,
                KernelRelease = m.TargetName,
                Version = m.Version,
                Document = signed.Text,
                PublishedAt = now,
                PublishedBy = actor.Name
            };
            return ((MetadataView(row2, revoked), true), await Epoch.BumpAsync(c, t));
        });
        epoch.Observe(moved);
        return result;
    }

    /// <summary>
    /// One pass of automatic promotion: a release in channel N-1 enters channel N when N has a delay (not
    /// manual), the delay since it entered N-1 has passed, at least N's minApplied machines in N-1 report
    /// it applied, and no machine anywhere reports it failed or applied-with-bug. Safe on many replicas:
    /// the promotion row's primary key lets only one of them insert it.
    /// </summary>
    public async Task<IReadOnlyList<(string Release, string Channel)>> PromoteDueAsync(DateTimeOffset now)
    {
        var done = new List<(string, string)>();
        var (_, moved) = await db.WriteAsync(async (c, t) =>
        {
            var channels = (await ChannelsAsync(c, t)).ToList();
            var releases = (await c.QueryAsync<ReleaseRow>($"SELECT {ReleaseColumns} FROM releases WHERE revoked_at " +
                $"IS NULL", transaction: t)).ToList();
            var promotions = (await c.QueryAsync<PromotionRow>("SELECT release_id, channel, promoted_at, promoted_by " +
                "FROM promotions", transaction: t))
                .ToDictionary(p => (p.ReleaseId, p.Channel));
            foreach (var r in releases)
            {
                for (var i = 1; i < channels.Count; i++)
                {
                    var target = channels[i];
                    if (target.PromoteAfterSeconds is null || promotions.ContainsKey((r.Id, target.Name))) continue;
                    if (!promotions.TryGetValue((r.Id, channels[i - 1].Name), out var previous)) break;
                    if (Time(previous.PromotedAt).AddSeconds(target.PromoteAfterSeconds.Value) > now) break;
                    var health = await HealthAsync(c, t, r.Id, r.BuildId, (int)r.Level, channels[i - 1].Name);
                    if (health.Failed > 0 || health.Applied < target.MinApplied) break;
                    var inserted = await c.ExecuteAsync(t,
                        "INSERT INTO promotions (release_id, channel, promoted_at, promoted_by) VALUES (@r, @c, @t, " +
                            "@by) ON CONFLICT (release_id, channel) DO NOTHING",
                        ("@r", r.Id), ("@c", target.Name), ("@t", now.ToUnixTimeMilliseconds()),
                            ("@by", "system:promoter"));
                    if (inserted == 0) break;
                    await AuditChain.AppendAsync(c, t, Actor.System("promoter"), "release.promote", $"release:{r.Id}",
                        new()
                        {
                            ["channel"] = target.Name,
                            ["reason"] = $"{target.PromoteAfterSeconds}s after {channels[i - 1].Name}; " +
                                $"{health.Applied} " +
                            $"applied there (at least {target.MinApplied} needed), 0 failed",
                        });
                    promotions[(r.Id, target.Name)] = new PromotionRow
                    {
                        ReleaseId = r.Id,
                        Channel = target.Name,
                        PromotedAt = now.ToUnixTimeMilliseconds()
                    };
                    done.Add((r.Id, target.Name));
                }
            }
            return (true, done.Count > 0 ? await Epoch.BumpAsync(c, t) : 0L);
        });
        epoch.Observe(moved);
        return done;
    }
}
