namespace Kintsugi.Protocol.Operator;

// The operator API's replies (docs/server.md): what the server writes, the CLI reads and the dashboard renders.

/// <summary>GET /api/v1/server: the server, its rollout order, and who is asking.</summary>
public sealed record ServerInfo(
    string Version, string Database, long Epoch, int CheckInSeconds, int EventsWaitSeconds,
    IReadOnlyList<ChannelView> Channels, string Role, string Actor);

/// <param name="PromoteAfterSeconds">Null for the first channel and for manual-only channels.</param>
public sealed record ChannelView(string Name, int Position, long? PromoteAfterSeconds, int MinApplied);

public sealed record PromotionView(string Channel, DateTimeOffset PromotedAt, string PromotedBy);

public sealed record RevocationView(DateTimeOffset RevokedAt, string RevokedBy, string Reason);

public sealed record CveView(string Id, string Severity, string Published);

public sealed record FixView(string Id, IReadOnlyList<CveView> Cves, string Description);

public sealed record ReleaseHealth(int Applied, int Failed);

/// <summary>
/// What a release or its metadata is for, by its <c>kind</c>: <c>kernel</c>, a kernel build (its release in
/// <c>kernelRelease</c>, <c>object</c> null), or <c>user</c>, a user-space executable or library (its file name in
/// <c>object</c>, <c>kernelRelease</c> null); either way <c>buildId</c> is the build's GNU build-id.
/// </summary>
public static class ReleaseKinds
{
    public const string Kernel = "kernel";
    public const string User = "user";

    /// <summary>The kernel release, or the object's name with "(user space)", for people to read.</summary>
    public static string Describe(string kind, string? kernelRelease, string? @object) =>
        kind == User ? $"{@object} (user space)" : kernelRelease ?? "";

    /// <summary>What the release is for, for people to read (<see cref="Describe"/>).</summary>
    public static string Target(this ReleaseView release) =>
        Describe(release.Kind, release.KernelRelease, release.Object);

    /// <summary>What the metadata is for, for people to read (<see cref="Describe"/>).</summary>
    public static string Target(this ReleaseMetadataView metadata) =>
        Describe(metadata.Kind, metadata.KernelRelease, metadata.Object);
}

/// <param name="KernelRelease">The kernel release, for a kernel release; null for a user-space one.</param>
/// <param name="Object">The object's file name (<c>libcrypto.so.3</c>), for a user-space release; null for a
/// kernel one.</param>
public sealed record ReleaseView(
    string Id, string Kind, string? KernelRelease, string? Object, string BuildId, int Level, string Bundle,
    long Size, string PublisherKey, DateTimeOffset PublishedAt, string PublishedBy, RevocationView? Revoked,
    IReadOnlyList<PromotionView> Channels, IReadOnlyList<FixView> Fixes, ReleaseHealth Health);

/// <param name="Created">False when the same bundle was published before (the reply is then 200, not 201).</param>
public sealed record PublishResult(bool Created, ReleaseView Release);

public sealed record PromoteResult(IReadOnlyList<string> PromotedTo, ReleaseView Release);

public sealed record MachineView(
    string Id, string Hostname, string HostMachineId, string Channel, string KernelRelease, string BuildId,
    string? PackageVersion, string AgentVersion, string? State, int? Level, string? Bundle, string? EffectiveVersion,
    long Taint, string? Detail, string? TargetRelease, DateTimeOffset EnrolledAt, DateTimeOffset? LastCheckIn,
    DateTimeOffset? StateSince, string? Address, bool Stale, string? MetadataFreshness = null,
    DateTimeOffset? CloneSuspectedAt = null,
    string? CloneDetail = null, DateTimeOffset? ReenrollApprovedUntil = null,
    IReadOnlyList<UserObjectView>? UserObjects = null);

/// <summary>
/// A user-space object a machine's processes map that has releases (or a patch installed), as its agent last reported
/// it: processes mapping it, how many run the installed level's patch, how many failed (retried at the next pass).
/// Given for one machine (GET /api/v1/machines/{id}), not in lists.
/// </summary>
public sealed record UserObjectView(string Object, string BuildId, int Processes, string State, int? Level,
    string? Bundle, int Patched, int Failed,
    string? Detail, DateTimeOffset UpdatedAt);

/// <summary>The trust-root update the server carries to agents, and what it changed in this server's keys.</summary>
public sealed record
    TrustRootView(long Version, string RootKey, IReadOnlyList<string> Trusted, IReadOnlyList<string> Retired,
    IReadOnlyList<string> Timestamp, DateTimeOffset PublishedAt, string PublishedBy, string Document,
    IReadOnlyList<string> Changes);

public sealed record EnrollmentTokenView(
    string Id, string Channel, string Description, DateTimeOffset? ExpiresAt, int? MaxUses, int Uses,
    DateTimeOffset CreatedAt, string CreatedBy, DateTimeOffset? RevokedAt);

public sealed record ApiTokenView(
    string Id, string Role, string Name, DateTimeOffset CreatedAt, string CreatedBy, DateTimeOffset? ExpiresAt,
    DateTimeOffset? RevokedAt);

/// <summary>A newly made token: the secret is shown this once and never stored.</summary>
public sealed record IssuedEnrollmentToken(string Token, EnrollmentTokenView Info);

public sealed record IssuedApiToken(string Token, ApiTokenView Info);

public sealed record PublisherKeyView(string Id, string State, DateTimeOffset AddedAt, string Pem);

/// <summary>The server's online timestamp key, for agents' trust stores (timestamp/).</summary>
public sealed record TimestampKeyView(string Id, string Pem);

/// <summary>The signed release metadata stored for one build: a kernel's (<paramref name="KernelRelease"/>) or a
/// user-space object's (<paramref name="Object"/>), as <see cref="ReleaseKinds"/> describes.</summary>
public sealed record ReleaseMetadataView(
    string Kind, string? KernelRelease, string? Object, string BuildId, long Version, int CurrentLevel,
    int MinimumLevel, IReadOnlyList<int> RevokedLevels, DateTimeOffset Expires, string PublisherKey,
    DateTimeOffset PublishedAt, string PublishedBy, string Metadata, IReadOnlyList<string> RevokedReleases);

public sealed record AuditEvent(
    long Seq, DateTimeOffset At, string Actor, string? Address, string Action, string Subject, string Detail,
    string PrevHash, string Hash);

public sealed record AuditProblem(long Seq, string Problem);

public sealed record AuditVerification(
    bool Intact, long Events, long HeadSeq, string HeadHash, IReadOnlyList<AuditProblem> Problems);

/// <summary>POST /api/v1/apt/packages: the agent package now in the server's apt repository.</summary>
public sealed record AptPackageView(string Package, string Version);

// ---- air-gap transfer ----

/// <param name="KernelRelease">The kernel release, for a kernel release; null for a user-space one (an export of
/// an older server named a user-space object here).</param>
/// <param name="Revoked">Set for a release the exporting server revoked (its bundle is not in the archive).</param>
/// <param name="Kind">What the release is for, as <see cref="ReleaseKinds"/> describes (absent in older exports:
/// kernel).</param>
/// <param name="Object">The object's file name, for a user-space release.</param>
public sealed record ExportedRelease(
    string Id, string? KernelRelease, string BuildId, int Level, string Bundle, long Size,
        IReadOnlyList<string> Channels, RevocationView? Revoked = null, string Kind = ReleaseKinds.Kernel,
    string? Object = null);

/// <summary>The index inside an export archive (kintsugi-export.json).</summary>
public sealed record ExportIndex(
    string Format, string ServerVersion, DateTimeOffset ExportedAt, IReadOnlyList<ExportedRelease> Releases);

/// <param name="Refused">Why this bundle was not imported, or null.</param>
public sealed record ImportedRelease(string Bundle, string? Release, bool Created, string? Refused);

/// <param name="Stored">False when this server already had this version or a newer one (then <c>Refused</c> says
/// so).</param>
public sealed record ImportedMetadata(string BuildId, long Version, bool Stored, string? Refused);

/// <param name="Metadata">Each signed release metadata document in the archive and what became of it.</param>
/// <param name="Revoked">Releases revoked here because the exporting server had revoked them.</param>
public sealed record ImportResult(int Imported, int AlreadyPresent, int Refused,
    IReadOnlyList<ImportedRelease> Releases, IReadOnlyList<ImportedMetadata>? Metadata = null, int Revoked = 0);

// ---- reports ----

public sealed record CountBy(string Key, int Machines);

public sealed record KernelSummary(string KernelRelease, string BuildId, int Machines, int Applied, int? BestLevel);

public sealed record FleetReport(
    DateTimeOffset GeneratedAt, int Machines, int Stale, IReadOnlyList<CountBy> ByState,
        IReadOnlyList<CountBy> ByChannel,
    IReadOnlyList<KernelSummary> ByKernel, int Releases, int RevokedReleases, long Epoch);

public sealed record ExposedMachine(
    string Machine, string Hostname, string Channel, string KernelRelease, string BuildId, string? State, int? Level,
    int FixLevel, DateTimeOffset FixAvailableSince, DateOnly ExposedSince, DateTimeOffset? LastCheckIn, string? Object =
    null);

public sealed record CveExposure(
    string Cve, string Severity, DateOnly Published, int Exposed, int Fixed, IReadOnlyList<ExposedMachine> Machines);

public sealed record ExposureReport(DateTimeOffset GeneratedAt, IReadOnlyList<CveExposure> Cves);

/// <summary>One machine and one CVE under PCI DSS 6.3.3: a fix released for its kernel must be installed within 30
/// days.</summary>
public sealed record ComplianceRow(
    string Machine, string Hostname, string Channel, string KernelRelease, string BuildId, string Cve, string Severity,
    DateTimeOffset FixReleasedAt, DateTimeOffset Deadline, DateTimeOffset? AppliedAt, bool CurrentlyFixed,
    double? DaysToApply, string Status, bool Breach, string? Object = null);

public sealed record ComplianceReport(
    DateTimeOffset GeneratedAt, int WindowDays, string MinimumSeverity, int Rows, int Breaches,
    IReadOnlyList<ComplianceRow> Items);
