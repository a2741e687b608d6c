using System.Data.Common;
using Dapper;
using Kintsugi.Protocol;
using Kintsugi.Server.Api;
using Kintsugi.Server.Storage;

namespace Kintsugi.Server.Fleet;

/// <summary>The machine a credential belongs to, as the check-in path needs it.</summary>
public sealed record MachineIdentity(string Id, string Channel, string BuildId, string? State, int? Level,
    string? Bundle, string? TargetRelease,
    string? BootId = null, string? PreviousBootId = null, bool CloneSuspected = false);

/// <summary>Enrollment, machine credentials, the inventory, and enrollment tokens.</summary>
public sealed class Machines(Database db, ServerOptions options, CheckInWriter writer, Epoch epoch,
    ServerMetrics metrics, ReleaseTimestamps timestamps)
{
    private sealed class MachineRow
    {
        public string Id { get; set; } = "";
        public string HostMachineId { get; set; } = "";
        public string Hostname { get; set; } = "";
        public string Channel { get; set; } = "";
        public string KernelRelease { get; set; } = "";
        public string BuildId { get; set; } = "";
        public string? PackageVersion { get; set; }
        public string AgentVersion { get; set; } = "";
        public string? State { get; set; }
        public long? Level { get; set; }
        public string? Bundle { get; set; }
        public string? EffectiveVersion { get; set; }
        public long Taint { get; set; }
        public string? Detail { get; set; }
        public string? TargetRelease { get; set; }
        public long EnrolledAt { get; set; }
        public long? LastCheckinAt { get; set; }
        public long? StateSince { get; set; }
        public string? Address { get; set; }
        public long? CloneSuspectedAt { get; set; }
        public string? CloneDetail { get; set; }
        public long? ReenrollApprovedUntil { get; set; }
        public string? MetadataFreshness { get; set; }
    }

    private sealed class ObjectRow
    {
        public string Object { get; set; } = "";
        public string BuildId { get; set; } = "";
        public long Processes { get; set; }
        public string State { get; set; } = "";
        public long? Level { get; set; }
        public string? Bundle { get; set; }
        public long Patched { get; set; }
        public long Failed { get; set; }
        public string? Detail { get; set; }
        public long UpdatedAt { get; set; }
    }

    private sealed class ExistingMachineRow
    {
        public string Id { get; set; } = "";
        public string CredentialHash { get; set; } = "";
        public long? ReenrollApprovedUntil { get; set; }
    }

    /// <summary>How long an operator's approval to enroll a machine-id again stays usable.</summary>
    public static readonly TimeSpan ReenrollApproval = TimeSpan.FromHours(24);

    private sealed class TokenRow
    {
        public string Id { get; set; } = "";
        public string Channel { get; set; } = "";
        public string Description { get; set; } = "";
        public long? ExpiresAt { get; set; }
        public long? MaxUses { get; set; }
        public long Uses { get; set; }
        public long CreatedAt { get; set; }
        public string CreatedBy { get; set; } = "";
        public long? RevokedAt { get; set; }
    }

    private const string MachineColumns = "id, host_machine_id, hostname, channel, kernel_release, build_id, " +
        "package_version, agent_version, state, level, bundle, effective_version, taint, detail, target_release, " +
        "enrolled_at, last_checkin_at, state_since, address";

    private const string ViewColumns =
        MachineColumns + ", clone_suspected_at, clone_detail, reenroll_approved_until, metadata_freshness";

    private static DateTimeOffset Time(long ms) => Releases.Time(ms);

    // ---- enrollment ----

    private const string TokenRefused = "the enrollment token is unknown, revoked, expired or used up; ask an " +
        "operator for a new one (kintsugi server tokens enroll)";

    /// <summary>
    /// Turns an enrollment token into a machine credential. A machine-id already enrolled is enrolled again (same
    /// machine, new credential, the old one stops working) only when the request proves it is that machine (its
    /// current credential) or an operator approved it (<see cref="ApproveReenrollAsync"/>); otherwise it is refused
    /// (409) and the machine is marked as a suspected clone: a token and a copied /etc/machine-id no longer take a
    /// machine over, and two hosts sharing a machine-id no longer flap between credentials.
    /// </summary>
    public async Task<EnrollResponse> EnrollAsync(EnrollRequest request, string? address)
    {
        if (!Secrets.LooksLike(request.Token,
            Secrets.EnrollmentTokenPrefix)) throw FleetException.NotAuthenticated("the enrollment token is not valid");
        var hostname = Validation.Identifier("hostname", request.Hostname, 253);
        var machineId = request.MachineId?.Trim();
        if (machineId is null || machineId.Length != 32 || !Validation.IsLowerHex(machineId))
            throw FleetException.Invalid("machineId must be the contents of /etc/machine-id (32 lowercase hex digits)");
        var agentVersion = Validation.Version("agentVersion", request.AgentVersion, 64);
        var packageVersion = request.Kernel.PackageVersion is null ? null
            : Validation.Version("kernel.packageVersion", request.Kernel.PackageVersion, 128);
        var credential = Secrets.New(Secrets.MachineCredentialPrefix);
        var tokenHash = Secrets.Hash(request.Token);

        var machine = await db.WriteAsync(async (c, t) =>
        {
            var token = await c.QuerySingleOrDefaultAsync<TokenRow>(
                "SELECT id, channel, description, expires_at, max_uses, uses, created_at, created_by, revoked_at " +
                    "FROM enrollment_tokens WHERE hash = @h", new { h = tokenHash }, t);
            var now = Releases.Now();
            if (token is null || token.RevokedAt is not null || (token.ExpiresAt is { } expires && expires <= now)
                || (token.MaxUses is { } max && token.Uses >= max))
                throw FleetException.NotAuthenticated(TokenRefused);
            var bound = await c.QuerySingleOrDefaultAsync<ExistingMachineRow>(
                "SELECT id, credential_hash, reenroll_approved_until FROM machines WHERE host_machine_id = @m",
                new { m = machineId }, t);
            if (bound is not null && !(request.Credential is { } proof && Secrets.LooksLike(proof,
                Secrets.MachineCredentialPrefix) && Secrets.Hash(proof) == bound.CredentialHash)
                && !(bound.ReenrollApprovedUntil is { } until && until > now))
            {
                var why = $"{hostname} from {address ?? "an unknown address"} tried to enroll machine-id {machineId} " +
                    $"again without its credential or an operator's approval";
                await c.ExecuteAsync(t, "UPDATE machines SET clone_suspected_at = COALESCE(clone_suspected_at, @t), " +
                    "clone_detail = @d WHERE id = @id",
                    ("@t", now), ("@d", why), ("@id", bound.Id));
                await AuditChain.AppendAsync(c, t, new Actor($"machine:{bound.Id}", address),
                    "machine.reenroll-refused", $"machine:{bound.Id}", new()
                    {
                        ["hostname"] = hostname,
                        ["token"] = token.Id,
                        ["credentialGiven"] = (request.Credential is not null).ToString().ToLowerInvariant(),
                    });
                return (Id: bound.Id, Refused: true);
            }
            // The use is taken by a conditional update: on PostgreSQL a concurrent enrollment with the same token
            // waits for this row and re-reads it, so a single-use token is spent once whatever the timing.
            if (await c.ExecuteAsync(t,
                "UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = @id AND revoked_at IS NULL " +
                    "AND (max_uses IS NULL OR uses < max_uses)", ("@id", token.Id)) == 0)
                throw FleetException.NotAuthenticated(TokenRefused);
            var existing = bound?.Id;
            var id = existing ?? Secrets.NewId("m_");
            if (existing is null)
                await c.ExecuteAsync(t,
                    $"INSERT INTO machines ({MachineColumns}, credential_hash) VALUES (@id, @mid, @host, @ch, @kr, " +
                        $"@b, @pv, @av, NULL, NULL, NULL, NULL, 0, NULL, NULL, @now, NULL, NULL, @addr, @cred)",
                    ("@id", id), ("@mid", machineId), ("@host", hostname), ("@ch", token.Channel),
                        ("@kr", request.Kernel.Release.Value), ("@b", request.Kernel.BuildId.ToString()),
                    ("@pv", packageVersion), ("@av", agentVersion), ("@now", now), ("@addr", address),
                        ("@cred", Secrets.Hash(credential)));
            else
                await c.ExecuteAsync(t,
                    "UPDATE machines SET hostname = @host, channel = @ch, kernel_release = @kr, build_id = @b, " +
                    "package_version = @pv, agent_version = @av, address = @addr, " +
                    "credential_hash = @cred, reenroll_approved_until = NULL, boot_id = NULL, previous_boot_id = " +
                    "NULL WHERE id = @id",
                    ("@id", id), ("@host", hostname), ("@ch", token.Channel), ("@kr", request.Kernel.Release.Value),
                    ("@b", request.Kernel.BuildId.ToString()),
                    ("@pv", packageVersion), ("@av", agentVersion), ("@addr", address),
                    ("@cred", Secrets.Hash(credential)));
            await AuditChain.AppendAsync(c, t, new Actor($"machine:{id}", address),
                existing is null ? "machine.enroll" : "machine.reenroll", $"machine:{id}", new()
                {
                    ["hostname"] = hostname,
                    ["channel"] = token.Channel,
                    ["token"] = token.Id,
                    ["kernel"] = request.Kernel.Release.Value,
                    ["buildId"] = request.Kernel.BuildId.ToString(),
                    ["proof"] = existing is null ? null
                        : bound!.ReenrollApprovedUntil is { } approved && approved > now
                            && Secrets.Hash(request.Credential ?? "") != bound.CredentialHash ? "operator approval"
                        : "current credential",
                });
            return (Id: id, Refused: false);
        });
        if (machine.Refused)
            throw FleetException.Conflict($"machine-id {machineId} is already enrolled as {machine.Id}; enrolling it " +
                $"again needs the machine's current credential " +
                $"or an operator's approval (kintsugi server machines approve-reenroll {machine.Id}). If this host " +
                $"is a clone of another, give it its own " +
                "machine-id (rm /etc/machine-id && systemd-machine-id-setup) and enroll it as a new machine");
        metrics.Enrollments.Increment();
        return new EnrollResponse(machine.Id, credential, options.CheckInSeconds, options.EventsWaitSeconds);
    }

    /// <summary>An operator lets a machine-id enroll again without its credential (a re-imaged machine), for <see
    /// cref="ReenrollApproval"/>.</summary>
    public async Task<MachineView> ApproveReenrollAsync(string id, Actor actor)
    {
        Validation.MachineReference(id);
        await db.WriteAsync(async (c, t) =>
        {
            var until = Releases.Now() + (long)ReenrollApproval.TotalMilliseconds;
            if (await c.ExecuteAsync(t, "UPDATE machines SET reenroll_approved_until = @u WHERE id = @id",
                ("@u", until), ("@id", id)) == 0)
                throw FleetException.NotFound($"no machine {id}");
            await AuditChain.AppendAsync(c, t, actor, "machine.reenroll-approve", $"machine:{id}",
                new() { ["until"] = Releases.Time(until).ToString("O") });
        });
        return await GetAsync(id);
    }

    /// <summary>The machine a credential belongs to, or null (unknown or replaced by a re-enrollment).</summary>
    public async Task<MachineIdentity?> AuthenticateAsync(string? credential, CancellationToken cancellation)
    {
        if (!Secrets.LooksLike(credential, Secrets.MachineCredentialPrefix)) return null;
        await using var c = await db.OpenAsync(cancellation);
        await using var command = c.Command(null,
            "SELECT id, channel, build_id, state, level, bundle, target_release, boot_id, previous_boot_id, " +
            "clone_suspected_at FROM machines WHERE credential_hash = @h",
            ("@h", Secrets.Hash(credential!)));
        await using var reader = await command.ExecuteReaderAsync(cancellation);
        if (!await reader.ReadAsync(cancellation)) return null;
        string? Text(int i) => reader.IsDBNull(i) ? null : reader.GetString(i);
        return new MachineIdentity(reader.GetString(0), reader.GetString(1), reader.GetString(2), Text(3),
            reader.IsDBNull(4) ? null : (int)Convert.ToInt64(reader.GetValue(4)), Text(5), Text(6), Text(7), Text(8),
            !reader.IsDBNull(9));
    }

    // ---- check-in ----

    /// <summary>
    /// Records what the machine reports and answers what it should run: the highest level for its exact
    /// build-id promoted to its channel and not revoked; a lower level than the applied one is a rollback;
    /// <c>remove</c> when the applied level was revoked and nothing good is left.
    /// </summary>
    public async Task<CheckInResponse> CheckInAsync(MachineIdentity machine, CheckInRequest request, string? address,
        CancellationToken cancellation)
    {
        var detail = request.Detail;
        if (detail is not null
            && detail.Length > CheckInRequest.MaxDetailLength) throw FleetException.Invalid($"detail is longer than " +
            $"{CheckInRequest.MaxDetailLength} characters");
        if (request.Level is < 1) throw FleetException.Invalid("level must be a positive integer or null");
        if ((request.Level is null) != (request.Bundle is null)) throw FleetException.Invalid("level and bundle are " +
            "both given (something is applied) or both null");
        var agentVersion = Validation.Version("agentVersion", request.AgentVersion, 64);
        var effective = request.EffectiveVersion is null ? null
            : Validation.Version("effectiveVersion", request.EffectiveVersion, 128);
        var buildId = request.Kernel.BuildId.ToString();
        var packageVersion = request.Kernel.PackageVersion is null ? null
            : Validation.Version("kernel.packageVersion", request.Kernel.PackageVersion, 128);

        var currentEpoch = epoch.Current;
        var offer = await epoch.OfferAsync(buildId, machine.Channel, cancellation);
        CheckInAction action;
        ReleaseOffer? release = null;
        if (offer.HasRelease)
        {
            var runsIt = request.Level == offer.Level && request.Bundle?.ToString() == offer.Bundle;
            action = runsIt ? CheckInAction.None : CheckInAction.Apply;
            if (!runsIt) release = new ReleaseOffer(offer.Level, Kintsugi.Bundles.Sha256Digest.Parse(offer.Bundle!),
                offer.Size, ProtocolPaths.BundlePrefix + offer.Bundle);
        }
        else action = request.Level is { } applied && offer.RevokedLevels.Contains(applied) ? CheckInAction.Remove
            : CheckInAction.None;

        var (userOffers, userRecords) = await UserOffersAsync(machine, request.User, cancellation);

        var state = request.State.ToWire();
        var changed = state != machine.State || request.Level != machine.Level || buildId != machine.BuildId;
        var boot = Boots(machine, request.BootId);
        var freshness = request.Metadata?.Freshness is "none" or "fresh" or "stale" ? request.Metadata.Freshness : null;
        await writer.WriteAsync(new CheckInRecord(machine.Id, request.Kernel.Release.Value, buildId, packageVersion,
            agentVersion, state, request.Level,
            request.Bundle?.ToString(), effective, request.Taint, detail, offer.ReleaseId, Releases.Now(), address,
            changed ? new StateChange(machine.State, machine.Level, machine.BuildId) : null, boot, freshness,
            userRecords), cancellation);
        metrics.CountCheckIn(action);
        return new CheckInResponse(action, release, options.CheckInSeconds, options.EventsWaitSeconds, currentEpoch,
            offer.Metadata, timestamps.For(offer.Metadata), offer.TrustRoot,
            userOffers);
    }

    /// <summary>
    /// For each user-space object the machine reports: the best release for that object's build-id in the machine's
    /// channel (<c>apply</c> when the machine runs another bundle), or <c>remove</c> when the installed level was
    /// revoked and no good level is left. Only objects with releases (or a patch installed) are kept in the inventory:
    /// the rest of what a machine maps does not concern the server. Null reports (an older agent) leave the stored ones
    /// as they are.
    /// </summary>
    private async Task<(IReadOnlyList<UserOffer>? Offers,
        IReadOnlyList<UserObjectRecord>? Records)> UserOffersAsync(MachineIdentity machine,
        IReadOnlyList<UserObjectReport>? reports, CancellationToken cancellation)
    {
        if (reports is null) return (null, null);
        if (reports.Count > CheckInRequest.MaxUserObjects)
            throw FleetException.Invalid($"user lists {reports.Count} objects; at most " +
                $"{CheckInRequest.MaxUserObjects}");
        var targets = await epoch.UserTargetsAsync(cancellation);
        var offers = new List<UserOffer>();
        var records = new List<UserObjectRecord>();
        foreach (var report in reports.DistinctBy(r => r.BuildId))
        {
            var buildId = report.BuildId.ToString();
            if (!targets.Contains(buildId) && report.Level is null) continue;
            var name = Validation.Version("user object name", report.Object, 255);
            if (report.Level is < 1 || (report.Level is null) != (report.Bundle is null))
                throw FleetException.Invalid($"user object {name}: level and bundle are both given (a patch is " +
                    $"installed) or both null");
            if (report.Processes < 0 || report.Patched < 0 || report.Failed < 0)
                throw FleetException.Invalid($"user object {name}: process counts must not be negative");
            var detail = report.Detail is { Length: > CheckInRequest.MaxDetailLength }
                ? report.Detail[..CheckInRequest.MaxDetailLength] : report.Detail;
            records.Add(new UserObjectRecord(buildId, name, report.Processes, report.State.ToWire(), report.Level,
                report.Bundle?.ToString(),
                report.Patched, report.Failed, detail));
            var offer = await epoch.OfferAsync(buildId, machine.Channel, cancellation);
            // The object's signed metadata travels with every answer about it: only it lets the agent take a
            // rollback or a removal, and its freshness shows a server withholding newer statements.
            var (metadata, timestamp) = (offer.Metadata, timestamps.For(offer.Metadata));
            if (offer.HasRelease && report.Bundle?.ToString() != offer.Bundle)
                offers.Add(new UserOffer(report.BuildId, CheckInAction.Apply, new ReleaseOffer(offer.Level,
                    Kintsugi.Bundles.Sha256Digest.Parse(offer.Bundle!), offer.Size,
                    ProtocolPaths.BundlePrefix + offer.Bundle), metadata, timestamp));
            else if (!offer.HasRelease && report.Level is { } installed && offer.RevokedLevels.Contains(installed))
                offers.Add(new UserOffer(report.BuildId, CheckInAction.Remove, null, metadata, timestamp));
            else if (metadata is not null)
                offers.Add(new UserOffer(report.BuildId, CheckInAction.None, null, metadata, timestamp));
        }
        return (offers, records);
    }

    /// <summary>
    /// The boot ids to keep after this check-in, and whether it shows a clone: a machine's boot id changes only
    /// forward (each boot a new one), so a check-in from the boot before the last one is a second host sharing this
    /// machine's identity (a disk cloned with its credential).
    /// </summary>
    private static BootRecord? Boots(MachineIdentity machine, string? reported)
    {
        if (reported is null) return null;
        if (reported.Length != 36 || !Guid.TryParse(reported, out _))
            throw FleetException.Invalid("bootId must be the kernel's boot id (a UUID)");
        if (reported == machine.BootId) return new BootRecord(machine.BootId, machine.PreviousBootId, false, false);
        var clone = reported == machine.PreviousBootId;
        return new BootRecord(reported, machine.BootId, clone, clone && !machine.CloneSuspected);
    }

    // ---- inventory ----

    public async Task<IReadOnlyList<MachineView>> ListAsync(string? channel = null, string? state = null,
        string? buildId = null)
    {
        await using var c = await db.OpenAsync();
        var rows = await c.QueryAsync<MachineRow>(
            $"SELECT {ViewColumns} FROM machines WHERE (@ch IS NULL OR channel = @ch) AND (@st IS NULL OR state = " +
            $"@st) AND (@b IS NULL OR build_id = @b) ORDER BY hostname, id",
            new { ch = channel, st = state, b = buildId });
        return [.. rows.Select(View)];
    }

    public async Task<MachineView> GetAsync(string id)
    {
        Validation.MachineReference(id);
        await using var c = await db.OpenAsync();
        var row = await c.QuerySingleOrDefaultAsync<MachineRow>($"SELECT {ViewColumns} FROM machines WHERE id = @id",
            new { id })
            ?? throw FleetException.NotFound($"no machine {id}");
        var objects = await c.QueryAsync<ObjectRow>("SELECT object, build_id, processes, state, level, bundle, " +
            "patched, failed, detail, updated_at " +
            "FROM machine_objects WHERE machine = @id ORDER BY object, build_id", new { id });
        return View(row) with
        {
            UserObjects = [.. objects.Select(o =>
                new UserObjectView(o.Object, o.BuildId, (int)o.Processes, o.State, (int?)o.Level, o.Bundle,
                (int)o.Patched, (int)o.Failed, o.Detail, Time(o.UpdatedAt)))],
        };
    }

    private MachineView View(MachineRow r)
    {
        var stale = r.LastCheckinAt is null || DateTimeOffset.UtcNow
            - Time(r.LastCheckinAt.Value) > TimeSpan.FromSeconds(options.CheckInSeconds * options.StaleAfterIntervals);
        return new MachineView(r.Id, r.Hostname, r.HostMachineId, r.Channel, r.KernelRelease, r.BuildId,
            r.PackageVersion, r.AgentVersion, r.State, (int?)r.Level, r.Bundle,
            r.EffectiveVersion, r.Taint, r.Detail, r.TargetRelease, Time(r.EnrolledAt),
            r.LastCheckinAt is null ? null : Time(r.LastCheckinAt.Value),
            r.StateSince is null ? null : Time(r.StateSince.Value), r.Address, stale, r.MetadataFreshness,
            r.CloneSuspectedAt is null ? null : Time(r.CloneSuspectedAt.Value), r.CloneDetail,
            r.ReenrollApprovedUntil is { } until && until > Releases.Now() ? Time(until) : null);
    }

    /// <summary>Moves a machine to another channel (it gets that channel's release at its next check-in).</summary>
    public async Task<MachineView> MoveAsync(string id, string channel, Actor actor)
    {
        Validation.MachineReference(id);
        Validation.ChannelName(channel);
        await db.WriteAsync(async (c, t) =>
        {
            if (await c.ScalarAsync(t, "SELECT name FROM channels WHERE name = @n",
                ("@n", channel)) is null) throw FleetException.NotFound($"no channel '{channel}'");
            var from = (string?)await c.ScalarAsync(t, "SELECT channel FROM machines WHERE id = @id", ("@id", id))
                ?? throw FleetException.NotFound($"no machine {id}");
            await c.ExecuteAsync(t, "UPDATE machines SET channel = @c WHERE id = @id", ("@c", channel), ("@id", id));
            await AuditChain.AppendAsync(c, t, actor, "machine.move", $"machine:{id}",
                new() { ["from"] = from, ["to"] = channel });
        });
        return await GetAsync(id);
    }

    /// <summary>Forgets a machine and invalidates its credential (it must enroll again).</summary>
    public async Task DeleteAsync(string id, Actor actor)
    {
        Validation.MachineReference(id);
        await db.WriteAsync(async (c, t) =>
        {
            var hostname = (string?)await c.ScalarAsync(t, "SELECT hostname FROM machines WHERE id = @id", ("@id", id))
                ?? throw FleetException.NotFound($"no machine {id}");
            await c.ExecuteAsync(t, "DELETE FROM machine_levels WHERE machine = @id", ("@id", id));
            await c.ExecuteAsync(t, "DELETE FROM machine_objects WHERE machine = @id", ("@id", id));
            await c.ExecuteAsync(t, "DELETE FROM machines WHERE id = @id", ("@id", id));
            await AuditChain.AppendAsync(c, t, actor, "machine.delete", $"machine:{id}",
                new() { ["hostname"] = hostname });
        });
    }

    // ---- enrollment tokens ----

    public async Task<IssuedEnrollmentToken> CreateEnrollmentTokenAsync(EnrollmentTokenRequest request, Actor actor)
    {
        Validation.ChannelName(request.Channel);
        var description = Validation.OptionalText("description", request.Description, 256) ?? "";
        if (request.ExpiresInSeconds is < 60
            or > 10L * 366 * 86_400) throw FleetException.Invalid("expiresInSeconds must be between 60 and ten years");
        if (request.MaxUses is < 1
            or > 10_000_000) throw FleetException.Invalid("maxUses must be between 1 and 10000000");
        var token = Secrets.New(Secrets.EnrollmentTokenPrefix);
        var id = Secrets.NewId("et_");
        var now = Releases.Now();
        long? expires = request.ExpiresInSeconds is { } s ? now + s * 1000 : null;
        await db.WriteAsync(async (c, t) =>
        {
            if (await c.ScalarAsync(t, "SELECT name FROM channels WHERE name = @n",
                ("@n", request.Channel)) is null) throw FleetException.NotFound($"no channel '{request.Channel}'");
            await c.ExecuteAsync(t,
                "INSERT INTO enrollment_tokens (id, hash, channel, description, expires_at, max_uses, uses, " +
                "created_at, created_by, revoked_at) VALUES (@id, @h, @c, @d, @e, @m, 0, @t, @by, NULL)",
                ("@id", id), ("@h", Secrets.Hash(token)), ("@c", request.Channel), ("@d", description), ("@e", expires),
                    ("@m", (long?)request.MaxUses), ("@t", now), ("@by", actor.Name));
            await AuditChain.AppendAsync(c, t, actor, "enrollment-token.create", $"enrollment-token:{id}", new()
            {
                ["channel"] = request.Channel,
                ["expiresAt"] = expires is null ? null
                    : Time(expires.Value).ToString("O"),
                ["maxUses"] = request.MaxUses?.ToString(),
            });
        });
        return new IssuedEnrollmentToken(token,
            new EnrollmentTokenView(id, request.Channel, description, expires is null ? null : Time(expires.Value),
            request.MaxUses, 0, Time(now), actor.Name, null));
    }

    public async Task<IReadOnlyList<EnrollmentTokenView>> EnrollmentTokensAsync()
    {
        await using var c = await db.OpenAsync();
        var rows = await c.QueryAsync<TokenRow>("SELECT id, channel, description, expires_at, max_uses, uses, " +
            "created_at, created_by, revoked_at FROM enrollment_tokens ORDER BY created_at, id");
        return [.. rows.Select(r =>
            new EnrollmentTokenView(r.Id, r.Channel, r.Description, r.ExpiresAt is null ? null
            : Time(r.ExpiresAt.Value), (int?)r.MaxUses, (int)r.Uses,
            Time(r.CreatedAt), r.CreatedBy, r.RevokedAt is null ? null : Time(r.RevokedAt.Value)))];
    }

    public async Task RevokeEnrollmentTokenAsync(string id, Actor actor)
    {
        if (id.Length != 19 || !id.StartsWith("et_", StringComparison.Ordinal)
            || !Validation.IsLowerHex(id[3..])) throw FleetException.Invalid($"'{id}' is not an enrollment token id " +
            $"(et_ and 16 hex digits)");
        await db.WriteAsync(async (c, t) =>
        {
            var updated = await c.ExecuteAsync(t,
                "UPDATE enrollment_tokens SET revoked_at = @t WHERE id = @id AND revoked_at IS NULL",
                ("@t", Releases.Now()), ("@id", id));
            if (updated == 0)
            {
                if (await c.ScalarAsync(t, "SELECT id FROM enrollment_tokens WHERE id = @id",
                    ("@id", id)) is null) throw FleetException.NotFound($"no enrollment token {id}");
                return;
            }
            await AuditChain.AppendAsync(c, t, actor, "enrollment-token.revoke", $"enrollment-token:{id}");
        });
    }
}
