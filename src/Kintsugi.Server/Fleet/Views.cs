namespace Kintsugi.Server.Fleet;

// What the API returns (camelCase JSON) and the dashboard renders.

public sealed record ChannelView(string Name, int Position, long? PromoteAfterSeconds, int MinApplied);

public sealed record PromotionView(string Channel, DateTimeOffset PromotedAt, string PromotedBy);

public sealed record RevocationView(DateTimeOffset RevokedAt, string RevokedBy, string Reason);

public sealed record CveView(string Id, string Severity, string Published);

public sealed record FixView(string Id, IReadOnlyList<CveView> Cves, string Description);

public sealed record ReleaseHealth(int Applied, int Failed);

public sealed record ReleaseView(
    string Id, string KernelRelease, string BuildId, int Level, string Bundle, long Size, string PublisherKey,
    DateTimeOffset PublishedAt, string PublishedBy, RevocationView? Revoked, IReadOnlyList<PromotionView> Channels,
    IReadOnlyList<FixView> Fixes, ReleaseHealth Health);

public sealed record PublishResult(bool Created, ReleaseView Release);

public sealed record PromoteResult(IReadOnlyList<string> PromotedTo, ReleaseView Release);

public sealed record MachineView(
    string Id, string Hostname, string HostMachineId, string Channel, string KernelRelease, string BuildId, string? PackageVersion,
    string AgentVersion, string? State, int? Level, string? Bundle, string? EffectiveVersion, long Taint, string? Detail,
    string? TargetRelease, DateTimeOffset EnrolledAt, DateTimeOffset? LastCheckIn, DateTimeOffset? StateSince, string? Address, bool Stale,
    string? MetadataFreshness = null, DateTimeOffset? CloneSuspectedAt = null, string? CloneDetail = null, DateTimeOffset? ReenrollApprovedUntil = null);

public sealed record EnrollmentTokenView(string Id, string Channel, string Description, DateTimeOffset? ExpiresAt, int? MaxUses, int Uses,
    DateTimeOffset CreatedAt, string CreatedBy, DateTimeOffset? RevokedAt);

public sealed record ApiTokenView(string Id, string Role, string Name, DateTimeOffset CreatedAt, string CreatedBy, DateTimeOffset? ExpiresAt, DateTimeOffset? RevokedAt);

/// <summary>A newly made token: the secret is shown this once and never stored.</summary>
public sealed record IssuedEnrollmentToken(string Token, EnrollmentTokenView Info);

public sealed record IssuedApiToken(string Token, ApiTokenView Info);

public sealed record PublisherKeyView(string Id, string State, DateTimeOffset AddedAt, string Pem);

// Requests of the operator API.
public sealed record PromoteRequest(string? Channel = null, string? Reason = null);

public sealed record RevokeRequest(string Reason);

public sealed record ChannelRequest(long? PromoteAfterSeconds = null, int? MinApplied = null, bool? Manual = null);

public sealed record EnrollmentTokenRequest(string Channel, string? Description = null, long? ExpiresInSeconds = null, int? MaxUses = null);

public sealed record ApiTokenRequest(string Role, string Name, long? ExpiresInSeconds = null);

public sealed record MoveMachineRequest(string Channel);

public sealed record PublisherKeyRequest(string Pem);

/// <summary>Signed release metadata (docs/bundle-format.md): the envelope as JSON text, exactly as signed.</summary>
public sealed record ReleaseMetadataRequest(string Metadata);

public sealed record TrustRootRequest(string Document);

/// <summary>The trust-root update the server carries to agents, and what it changed in this server's keys.</summary>
public sealed record TrustRootView(long Version, string RootKey, IReadOnlyList<string> Trusted, IReadOnlyList<string> Retired, IReadOnlyList<string> Timestamp,
    DateTimeOffset PublishedAt, string PublishedBy, string Document, IReadOnlyList<string> Changes);

/// <summary>The server's online timestamp key, for agents' trust stores (timestamp/).</summary>
public sealed record TimestampKeyView(string Id, string Pem);

public sealed record ReleaseMetadataView(string KernelRelease, string BuildId, long Version, int CurrentLevel, int MinimumLevel, IReadOnlyList<int> RevokedLevels,
    DateTimeOffset Expires, string PublisherKey, DateTimeOffset PublishedAt, string PublishedBy, string Metadata, IReadOnlyList<string> RevokedReleases);
