using System.Text.Json.Serialization;
using Kintsugi.Bundles;

namespace Kintsugi.Protocol;

/// <summary>The request paths of protocol v1 (docs/protocol.md).</summary>
public static class ProtocolPaths
{
    public const string Enroll = "/api/v1/agent/enroll";
    public const string CheckIn = "/api/v1/agent/checkin";
    public const string Events = "/api/v1/agent/events";
    public const string BundlePrefix = "/api/v1/bundles/";

    public static string Bundle(Sha256Digest digest) => BundlePrefix + digest;

    public static string EventsAfter(long epoch) => $"{Events}?epoch={epoch}";
}

/// <summary>A machine's kernel as it reports it: <c>uname -r</c>, the GNU build-id and, when known, the package
/// version.</summary>
public sealed record KernelIdentity(KernelRelease Release, BuildId BuildId, string? PackageVersion = null);

/// <param name="Credential">
/// The machine's current credential when it has one: proof that it is the machine already enrolled under this
/// machine-id. Without it (or an operator's approval) the server refuses to enroll an existing machine-id again.
/// </param>
public sealed record EnrollRequest(string Token, string Hostname, string MachineId, KernelIdentity Kernel,
    string AgentVersion, string? Credential = null);

/// <param name="Machine">The server's name for the machine (stable across re-enrollments of the same
/// machine-id).</param>
/// <param name="Credential">The per-machine bearer credential; the server keeps only its digest.</param>
public sealed record EnrollResponse(string Machine, string Credential, int CheckInSeconds, int EventsWaitSeconds);

/// <param name="Level">The applied cumulative level, or null when nothing is applied.</param>
/// <param name="Bundle">The digest of the applied bundle, or null.</param>
/// <param name="Detail">Free text for people (at most <see cref="MaxDetailLength"/> characters).</param>
/// <param name="BootId">The kernel's boot id (/proc/sys/kernel/random/boot_id): a machine never returns to an earlier
/// one, so two hosts sharing one identity (a cloned disk) show up as boot ids that alternate.</param>
public sealed record CheckInRequest(
    KernelIdentity Kernel,
    PatchState State,
    int? Level,
    Sha256Digest? Bundle,
    string? EffectiveVersion,
    long Taint,
    string? Detail,
    string AgentVersion,
    MetadataReport? Metadata = null,
    string? BootId = null,
    IReadOnlyList<UserObjectReport>? User = null)
{
    public const int MaxDetailLength = 1024;

    /// <summary>At most this many user-space objects per check-in (a machine maps a few hundred distinct
    /// objects).</summary>
    public const int MaxUserObjects = 4096;
}

/// <summary>
/// A user-space object (executable or shared library) that running processes on the machine map, and what the agent
/// did about it: the state in the shared vocabulary (<c>nothing-to-apply</c> when no user-space bundle is installed
/// for it), the cumulative level and bundle installed for it, and how many of the processes mapping it run the patch
/// and how many failed. Absent from agents older than this field.
/// </summary>
/// <param name="Object">The file name of the object as mapped (for example <c>libcrypto.so.3</c>).</param>
/// <param name="Processes">How many processes map it.</param>
/// <param name="Patched">How many of them run the installed level's patch.</param>
/// <param name="Failed">How many could not be patched in the last pass (busy, refused); retried at the next
/// pass.</param>
public sealed record
    UserObjectReport(BuildId BuildId, string Object, int Processes, PatchState State, int? Level, Sha256Digest? Bundle,
    int Patched, int Failed, string? Detail = null);

/// <summary>What the server wants done about one reported user-space object.</summary>
/// <param name="Action"><c>apply</c> the release (a higher or lower level than the installed one), or <c>remove</c>
/// (the installed level was revoked and no good level is left: revert it in every process), or <c>none</c> (only
/// the object's signed metadata travels).</param>
/// <param name="Metadata">The newest signed release metadata for the object's build-id (envelope JSON text), or
/// null: the agent obeys a rollback or a <c>remove</c> only when it says so (docs/bundle-format.md).</param>
/// <param name="Timestamp">A timestamp extending that metadata's freshness (JSON text), or null.</param>
public sealed record UserOffer(BuildId BuildId, CheckInAction Action, ReleaseOffer? Release,
    string? Metadata = null, string? Timestamp = null);

/// <summary>
/// The agent's signed release metadata for its build, as it judges it: <c>none</c> (never seen), <c>fresh</c>, or
/// <c>stale</c> (expired: newer metadata may be withheld). Absent from agents older than this field.
/// </summary>
public sealed record MetadataReport(string Freshness, long? Version, DateTimeOffset? Expires);

[JsonConverter(typeof(JsonStringEnumConverter<CheckInAction>))]
public enum CheckInAction
{
    /// <summary>Load <see cref="CheckInResponse.Release"/> with atomic replace (a lower level is a rollback).</summary>
    [JsonStringEnumMemberName("apply")] Apply,

    /// <summary>The machine runs what it should, or nothing exists for its kernel.</summary>
    [JsonStringEnumMemberName("none")] None,

    /// <summary>The applied level was revoked and no earlier good level exists: unload every Kintsugi patch.</summary>
    [JsonStringEnumMemberName("remove")] Remove,
}

/// <summary>A release the server offers: its level and the content address of its bundle.</summary>
public sealed record ReleaseOffer(int Level, Sha256Digest Bundle, long Size, string Url);

/// <param name="Metadata">The newest signed release metadata for the machine's build (the envelope's JSON text), or
/// null.</param>
/// <param name="Timestamp">A timestamp extending that metadata's freshness (JSON text), or null.</param>
/// <param name="TrustRoot">The newest signed trust-root update the server carries (JSON text), or null.</param>
/// <param name="User">For the reported user-space objects that need a change: what to apply or remove (null or empty
/// when nothing changes).</param>
public sealed record
    CheckInResponse(CheckInAction Action, ReleaseOffer? Release, int CheckInSeconds, int EventsWaitSeconds, long Epoch,
    string? Metadata = null, string? Timestamp = null, string? TrustRoot = null, IReadOnlyList<UserOffer>? User = null);

public sealed record EventsResponse(long Epoch);

/// <summary>An RFC 9457 problem document, as both sides read and write errors.</summary>
public sealed record ProblemDocument(string? Type, string Title, int Status, string? Detail);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true)]
[JsonSerializable(typeof(EnrollRequest))]
[JsonSerializable(typeof(EnrollResponse))]
[JsonSerializable(typeof(CheckInRequest))]
[JsonSerializable(typeof(MetadataReport))]
[JsonSerializable(typeof(UserObjectReport))]
[JsonSerializable(typeof(UserOffer))]
[JsonSerializable(typeof(CheckInResponse))]
[JsonSerializable(typeof(EventsResponse))]
[JsonSerializable(typeof(ProblemDocument))]
public sealed partial class ProtocolJson : JsonSerializerContext;
