using Dapper;
using Kintsugi.Server.Storage;

namespace Kintsugi.Server.Fleet;

/// <summary>Someone the API recognized: who (for the audit log) and with which role.</summary>
public sealed record Principal(Actor Actor, Role Role);

/// <summary>API tokens for people and tools, each with a role; only their SHA-256 is stored.</summary>
public sealed class ApiTokens(Database db)
{
    private sealed class TokenRow
    {
        public string Id { get; set; } = "";
        public string Role { get; set; } = "";
        public string Name { get; set; } = "";
        public long CreatedAt { get; set; }
        public string CreatedBy { get; set; } = "";
        public long? ExpiresAt { get; set; }
        public long? RevokedAt { get; set; }
    }

    public async Task<Principal?> AuthenticateAsync(string? token, string? address,
        CancellationToken cancellation = default)
    {
        if (!Secrets.LooksLike(token, Secrets.ApiTokenPrefix)) return null;
        await using var c = await db.OpenAsync(cancellation);
        var row = await c.QuerySingleOrDefaultAsync<TokenRow>("SELECT id, role, name, created_at, created_by, " +
            "expires_at, revoked_at FROM api_tokens WHERE hash = @h", new { h = Secrets.Hash(token!) });
        if (row is null || row.RevokedAt is not null || (row.ExpiresAt is { } e && e <= Releases.Now())
            || !Roles.TryParse(row.Role, out var role)) return null;
        return new Principal(new Actor($"token:{row.Name} ({row.Role})", address), role);
    }

    /// <summary>On a server without any API token, makes the first admin token and returns it (else null).</summary>
    public async Task<string?> BootstrapAsync()
    {
        var token = Secrets.New(Secrets.ApiTokenPrefix);
        return await db.WriteAsync(async (c, t) =>
        {
            if (Convert.ToInt64(await c.ScalarAsync(t, "SELECT COUNT(*) FROM api_tokens")) > 0) return null;
            await InsertAsync(c, t, Secrets.NewId("at_"), token, Role.Admin, "initial-admin", null,
                Actor.System("setup"));
            return token;
        });
    }

    public async Task<IssuedApiToken> CreateAsync(ApiTokenRequest request, Actor actor)
    {
        if (!Roles.TryParse(request.Role,
            out var role)) throw FleetException.Invalid($"role '{request.Role}' is not one of admin, operator, " +
            $"auditor");
        var name = Validation.Identifier("name", request.Name, 64);
        if (request.ExpiresInSeconds is < 60
            or > 10L * 366 * 86_400) throw FleetException.Invalid("expiresInSeconds must be between 60 and ten years");
        var token = Secrets.New(Secrets.ApiTokenPrefix);
        var id = Secrets.NewId("at_");
        long? expires = request.ExpiresInSeconds is { } s ? Releases.Now() + s * 1000 : null;
        await db.WriteAsync((c, t) => InsertAsync(c, t, id, token, role, name, expires, actor));
        return new IssuedApiToken(token,
            new ApiTokenView(id, role.ToWire(), name, DateTimeOffset.UtcNow, actor.Name, expires is null ? null
            : Releases.Time(expires.Value), null));
    }

    private static async Task InsertAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t,
        string id, string token, Role role, string name, long? expires, Actor actor)
    {
        await c.ExecuteAsync(t,
            "INSERT INTO api_tokens (id, hash, role, name, created_at, created_by, expires_at, revoked_at) VALUES " +
            "(@id, @h, @r, @n, @t, @by, @e, NULL)",
            ("@id", id), ("@h", Secrets.Hash(token)), ("@r", role.ToWire()), ("@n", name), ("@t", Releases.Now()),
                ("@by", actor.Name), ("@e", expires));
        await AuditChain.AppendAsync(c, t, actor, "api-token.create", $"api-token:{id}",
            new() { ["role"] = role.ToWire(), ["name"] = name });
    }

    public async Task<IReadOnlyList<ApiTokenView>> ListAsync()
    {
        await using var c = await db.OpenAsync();
        var rows = await c.QueryAsync<TokenRow>("SELECT id, role, name, created_at, created_by, expires_at, " +
            "revoked_at FROM api_tokens ORDER BY created_at, id");
        return [.. rows.Select(r => new ApiTokenView(r.Id, r.Role, r.Name, Releases.Time(r.CreatedAt), r.CreatedBy,
            r.ExpiresAt is null ? null : Releases.Time(r.ExpiresAt.Value), r.RevokedAt is null ? null
                : Releases.Time(r.RevokedAt.Value)))];
    }

    public async Task RevokeAsync(string id, Actor actor)
    {
        if (id.Length != 19 || !id.StartsWith("at_", StringComparison.Ordinal)
            || !Validation.IsLowerHex(id[3..])) throw FleetException.Invalid($"'{id}' is not an API token id (at_ " +
            $"and 16 hex digits)");
        await db.WriteAsync(async (c, t) =>
        {
            if (await c.ExecuteAsync(t, "UPDATE api_tokens SET revoked_at = @t WHERE id = @id AND revoked_at IS NULL",
                ("@t", Releases.Now()), ("@id", id)) == 0)
            {
                if (await c.ScalarAsync(t, "SELECT id FROM api_tokens WHERE id = @id",
                    ("@id", id)) is null) throw FleetException.NotFound($"no API token {id}");
                return;
            }
            await AuditChain.AppendAsync(c, t, actor, "api-token.revoke", $"api-token:{id}");
        });
    }
}
