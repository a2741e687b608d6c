using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Kintsugi.Bundles;

/// <summary>
/// What the publisher says, signed, about the levels of one kernel build or of one user-space object
/// (docs/bundle-format.md, "Release metadata"): the newest level, the lowest level still acceptable, the levels
/// revoked, and until when the statement holds. <see cref="Version"/> only goes up, so an agent that keeps the
/// newest one it has seen cannot be handed an older statement (a rollback of the metadata itself).
/// </summary>
public sealed record ReleaseMetadata
{
    public const string DocumentType = "kintsugi-release-metadata";

    /// <summary>Always <see cref="DocumentType"/>: a signature over a timestamp can never be read as
    /// metadata.</summary>
    public required string Type { get; init; }

    /// <summary>The kernel build these levels belong to (release and GNU build-id; no package version); absent
    /// (null) for a user-space object's levels, which name the <see cref="Object"/> instead.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public KernelTarget? Target { get; init; }

    /// <summary>The user-space object (executable or shared library, by GNU build-id; no package version) whose
    /// user-space patch levels these are; absent in a kernel build's metadata, whose bytes are unchanged by
    /// it.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ObjectTarget? Object { get; init; }

    /// <summary>A counter, at least 1, raised by every new statement for this build.</summary>
    public required long Version { get; init; }

    /// <summary>The highest level published for this build (0: none yet).</summary>
    public required int CurrentLevel { get; init; }

    /// <summary>The lowest level a machine may run (0: no minimum).</summary>
    public required int MinimumLevel { get; init; }

    /// <summary>Levels that must not run, ascending.</summary>
    public required IReadOnlyList<int> RevokedLevels { get; init; }

    /// <summary>After this instant the statement is stale unless a timestamp extends it.</summary>
    public required DateTimeOffset Expires { get; init; }

    public required PublisherKeyId PublisherKeyId { get; init; }

    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>The build-id the levels belong to: the kernel's or the object's.</summary>
    [JsonIgnore]
    public BuildId BuildId => Object?.BuildId ?? Target!.BuildId;

    /// <summary>For messages: the kernel release, or the object's file name.</summary>
    [JsonIgnore]
    public string TargetName => Object?.Name ?? Target!.Release.Value;

    /// <summary>Whether a machine may run <paramref name="level"/>: not below the minimum, not above the current level,
    /// not revoked.</summary>
    public bool Permits(int level) =>
        level >= Math.Max(1, MinimumLevel) && level <= CurrentLevel && !RevokedLevels.Contains(level);

    /// <summary>Why <paramref name="level"/> may not run, or null when it may.</summary>
    public string? Forbids(int level) =>
        RevokedLevels.Contains(level) ? $"level {level} is revoked by signed release metadata version {Version}"
        : level < MinimumLevel
        ? $"level {level} is below the minimum level {MinimumLevel} of signed release metadata version {Version}"
        : level > CurrentLevel ? $"level {level} is above the current level {CurrentLevel} of signed release " +
        $"metadata version {Version} (publish new metadata with it)"
        : level < 1 ? $"level {level} is not a level" : null;
}

/// <summary>
/// A freshness extension, signed by an online timestamp key: "release metadata version N of this build, with
/// this digest, is still current until <see cref="Expires"/>". It names one exact metadata document and can
/// only move that document's expiry later; it cannot change a level, a minimum or a revocation.
/// </summary>
public sealed record ReleaseTimestamp
{
    public const string DocumentType = "kintsugi-release-timestamp";

    public required string Type { get; init; }
    public required BuildId BuildId { get; init; }
    public required long MetadataVersion { get; init; }

    /// <summary>SHA-256 of the metadata's signed payload.</summary>
    public required Sha256Digest MetadataSha256 { get; init; }

    public required DateTimeOffset Expires { get; init; }
    public required PublisherKeyId TimestampKeyId { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
}

/// <summary>What a publisher states to make release metadata: about a kernel build (<paramref name="Target"/>) or a
/// user-space object (<paramref name="Object"/>), never both.</summary>
public sealed record ReleaseMetadataDescription(KernelTarget? Target, long Version, int CurrentLevel, int MinimumLevel,
    IReadOnlyList<int> RevokedLevels, DateTimeOffset Expires, ObjectTarget? Object = null);

/// <summary>
/// The transport form of a signed document: <c>{"signed":"&lt;base64
/// payload&gt;","keyId":"…","signature":"&lt;base64&gt;"}</c>. The signature covers a context line naming the document
/// type, then the payload bytes exactly as carried.
/// </summary>
internal sealed record SignedEnvelope(string Signed, PublisherKeyId KeyId, string Signature);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    WriteIndented = false,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true,
    AllowDuplicateProperties = false)]
[JsonSerializable(typeof(ReleaseMetadata))]
[JsonSerializable(typeof(ReleaseTimestamp))]
[JsonSerializable(typeof(TrustRoot))]
[JsonSerializable(typeof(SignedEnvelope))]
internal sealed partial class MetadataJson : JsonSerializerContext;

/// <summary>Signing, reading and canonical form of the small signed documents (release metadata, timestamps).</summary>
internal static class SignedDocuments
{
    /// <summary>The documents are small; anything larger is refused before parsing.</summary>
    public const int MaxLength = 64 * 1024;

    public static byte[] SignedBytes(string type, ReadOnlySpan<byte> payload)
    {
        var context = Encoding.ASCII.GetBytes(type + " v1\n");
        var bytes = new byte[context.Length + payload.Length];
        context.CopyTo(bytes, 0);
        payload.CopyTo(bytes.AsSpan(context.Length));
        return bytes;
    }

    public static (byte[] Envelope, byte[] Payload) Sign<T>(T document, string type, JsonTypeInfo<T> info,
        PublisherKey key)
    {
        var payload = JsonSerializer.SerializeToUtf8Bytes(document, info);
        var signature = key.Sign(SignedBytes(type, payload));
        var envelope = new SignedEnvelope(Convert.ToBase64String(payload), key.Id, Convert.ToBase64String(signature));
        return (JsonSerializer.SerializeToUtf8Bytes(envelope, MetadataJson.Default.SignedEnvelope), payload);
    }

    /// <summary>Parses the envelope and its payload, refusing anything but the canonical form. Does not check the
    /// signature.</summary>
    public static (T Document, byte[] Payload, PublisherKeyId KeyId, byte[] Signature) Read<T>(ReadOnlySpan<byte> input,
        string what, JsonTypeInfo<T> info)
        where T : class
    {
        if (input.Length > MaxLength) throw Invalid($"the {what} is {input.Length} bytes; at most {MaxLength}");
        try
        {
            var envelope = JsonSerializer.Deserialize(input, MetadataJson.Default.SignedEnvelope)
                ?? throw Invalid($"the {what} is JSON null");
            var payload = Convert.FromBase64String(envelope.Signed);
            var signature = Convert.FromBase64String(envelope.Signature);
            var document =
                JsonSerializer.Deserialize(payload, info) ?? throw Invalid($"the {what}'s payload is JSON null");
            if (!payload.AsSpan().SequenceEqual(JsonSerializer.SerializeToUtf8Bytes(document, info)))
                throw Invalid(
                    $"the {what}'s payload is not in canonical form (compact JSON, documented field order, UTC times)");
            return (document, payload, envelope.KeyId, signature);
        }
        catch (Exception e) when (e is JsonException or FormatException or ArgumentException
            or InvalidOperationException or OverflowException)
        {
            throw Invalid($"the {what} is not valid: {e.Message}", e);
        }
    }

    public static DateTimeOffset Second(DateTimeOffset time)
    {
        var utc = time.ToUniversalTime();
        return new DateTimeOffset(utc.Ticks - utc.Ticks % TimeSpan.TicksPerSecond, TimeSpan.Zero);
    }

    public static BundleException Invalid(string message, Exception? inner = null) =>
        new(BundleFailure.InvalidMetadata, message, inner);
}

/// <summary>Release metadata as carried (the signed envelope's bytes), parsed but not yet trusted.</summary>
public sealed class SignedReleaseMetadata
{
    private readonly byte[] _envelope;
    private readonly byte[] _signature;

    public ReleaseMetadata Metadata { get; }

    /// <summary>SHA-256 of the signed payload: what a timestamp names.</summary>
    public Sha256Digest Digest { get; }

    public PublisherKeyId KeyId { get; }

    internal byte[] Payload { get; }

    private SignedReleaseMetadata(byte[] envelope, ReleaseMetadata metadata, byte[] payload, PublisherKeyId keyId,
        byte[] signature)
    {
        _envelope = envelope;
        Metadata = metadata;
        Payload = payload;
        KeyId = keyId;
        _signature = signature;
        Digest = Sha256Digest.Of(payload);
    }

    /// <summary>The envelope as JSON text (what the server stores and sends, and the agent keeps).</summary>
    public string Text => Encoding.UTF8.GetString(_envelope);

    public static SignedReleaseMetadata
        Create(ReleaseMetadataDescription description, PublisherKey key, DateTimeOffset? now = null)
    {
        var metadata = new ReleaseMetadata
        {
            Type = ReleaseMetadata.DocumentType,
            Target = description.Target is { } kernel ? kernel with { PackageVersion = null } : null,
            Object = description.Object is { } o ? o with { PackageVersion = null } : null,
            Version = description.Version,
            CurrentLevel = description.CurrentLevel,
            MinimumLevel = description.MinimumLevel,
            RevokedLevels = [.. description.RevokedLevels.Distinct().Order()],
            Expires = SignedDocuments.Second(description.Expires),
            PublisherKeyId = key.Id,
            CreatedAt = SignedDocuments.Second(now ?? DateTimeOffset.UtcNow),
        };
        Validate(metadata);
        var (envelope, _) =
            SignedDocuments.Sign(metadata, ReleaseMetadata.DocumentType, MetadataJson.Default.ReleaseMetadata, key);
        return Read(envelope);
    }

    public static SignedReleaseMetadata Read(string text) => Read(Encoding.UTF8.GetBytes(text));

    /// <summary>Parses and validates; refuses non-canonical payloads. Does not check the signature (see <see
    /// cref="Verify"/>).</summary>
    public static SignedReleaseMetadata Read(ReadOnlySpan<byte> input)
    {
        var (metadata, payload, keyId, signature) =
            SignedDocuments.Read(input, "release metadata", MetadataJson.Default.ReleaseMetadata);
        Validate(metadata);
        if (metadata.PublisherKeyId != keyId)
            throw SignedDocuments.Invalid(
                $"the release metadata names key {metadata.PublisherKeyId} but is signed by {keyId}");
        return new SignedReleaseMetadata(input.ToArray(), metadata, payload, keyId, signature);
    }

    private static void Validate(ReleaseMetadata m)
    {
        if (m.Type != ReleaseMetadata.DocumentType)
            throw SignedDocuments.Invalid($"the document is a '{m.Type}', not release metadata");
        if (m.Target is not null && m.Object is not null)
            throw SignedDocuments.Invalid("the release metadata names both a kernel build and a user-space object; " +
                "it is about one or the other");
        if (m.Object is { } o)
        {
            if (o.BuildId.ToString().Length == 0 || string.IsNullOrWhiteSpace(o.Name) || o.Name.Length > 255)
                throw SignedDocuments.Invalid("the release metadata's object needs a name and a build-id");
            if (o.PackageVersion is not null) throw SignedDocuments.Invalid("the release metadata's object " +
                "carries no package version (the build-id is the identity)");
        }
        else if (m.Target is null || m.Target.Release.Value is null || m.Target.BuildId.ToString().Length == 0)
            throw SignedDocuments.Invalid("the release metadata names no kernel build nor user-space object");
        else if (m.Target.PackageVersion is not null) throw SignedDocuments.Invalid("the release metadata's target " +
            "carries no package version (the build-id is the identity)");
        if (m.Version < 1) throw SignedDocuments.Invalid($"version {m.Version} is not a positive integer");
        if (m.CurrentLevel < 0) throw SignedDocuments.Invalid($"current level {m.CurrentLevel} is negative");
        if (m.MinimumLevel < 0 || m.MinimumLevel > m.CurrentLevel)
            throw SignedDocuments.Invalid($"minimum level {m.MinimumLevel} must be between 0 and the current level " +
                $"{m.CurrentLevel}");
        if (m.RevokedLevels is null)
            throw SignedDocuments.Invalid("the revoked levels are missing (use an empty list)");
        if (m.RevokedLevels.Count > 100_000) throw SignedDocuments.Invalid("too many revoked levels");
        for (var i = 0; i < m.RevokedLevels.Count; i++)
        {
            if (m.RevokedLevels[i] < 1 || m.RevokedLevels[i] > m.CurrentLevel)
                throw SignedDocuments.Invalid($"revoked level {m.RevokedLevels[i]} is not between 1 and the current " +
                    $"level {m.CurrentLevel}");
            if (i > 0 && m.RevokedLevels[i] <= m.RevokedLevels[i - 1])
                throw SignedDocuments.Invalid("the revoked levels must be ascending, each once");
        }
        if (m.Expires.Offset != TimeSpan.Zero || m.CreatedAt.Offset != TimeSpan.Zero)
            throw SignedDocuments.Invalid("times must be in UTC");
        if (m.Expires <= m.CreatedAt) throw SignedDocuments.Invalid("the release metadata expires before it was made");
    }

    /// <summary>
    /// Checks the signature against <paramref name="trust"/>'s publisher keys (a retired key is refused) and,
    /// when given, that it is about <paramref name="build"/>. Expiry is the caller's policy (stale is reported, not
    /// refused).
    /// </summary>
    public TrustedKey Verify(TrustStore trust, BuildId? build = null)
    {
        var key = trust.Find(KeyId) ?? throw new BundleException(BundleFailure.UnknownKey,
            $"the release metadata is signed by key {KeyId}, which is not a publisher key in trust store " +
            $"{trust.Directory}");
        if (key.State == KeyState.Retired)
            throw new BundleException(BundleFailure.RetiredKey,
                $"the release metadata is signed by key {KeyId}, which is retired in trust store {trust.Directory}");
        if (!key.Key.VerifySignature(SignedDocuments.SignedBytes(ReleaseMetadata.DocumentType, Payload), _signature))
            throw new BundleException(BundleFailure.BadSignature,
                $"the release metadata's signature does not verify for key {KeyId}: it was altered after signing");
        if (build is { } expected && Metadata.BuildId != expected)
            throw new BundleException(BundleFailure.WrongTarget,
                $"the release metadata is for build-id {Metadata.BuildId} ({Metadata.TargetName}), not " +
                $"{(Metadata.Object is null ? "this kernel's" : "the object's")} {expected}");
        return key;
    }

    public override string ToString() => $"release metadata version {Metadata.Version} for {Metadata.TargetName} " +
        $"(build-id {Metadata.BuildId})";
}

/// <summary>A timestamp as carried, parsed but not yet trusted.</summary>
public sealed class SignedReleaseTimestamp
{
    private readonly byte[] _envelope;
    private readonly byte[] _payload;
    private readonly byte[] _signature;

    public ReleaseTimestamp Timestamp { get; }

    public PublisherKeyId KeyId { get; }

    private SignedReleaseTimestamp(byte[] envelope, ReleaseTimestamp timestamp, byte[] payload, PublisherKeyId keyId,
        byte[] signature)
    {
        _envelope = envelope;
        Timestamp = timestamp;
        _payload = payload;
        KeyId = keyId;
        _signature = signature;
    }

    public string Text => Encoding.UTF8.GetString(_envelope);

    /// <summary>Extends <paramref name="metadata"/>'s freshness to <paramref name="expires"/>, signed by a timestamp
    /// key.</summary>
    public static SignedReleaseTimestamp Create(SignedReleaseMetadata metadata, DateTimeOffset expires,
        PublisherKey timestampKey, DateTimeOffset? now = null)
    {
        var timestamp = new ReleaseTimestamp
        {
            Type = ReleaseTimestamp.DocumentType,
            BuildId = metadata.Metadata.BuildId,
            MetadataVersion = metadata.Metadata.Version,
            MetadataSha256 = metadata.Digest,
            Expires = SignedDocuments.Second(expires),
            TimestampKeyId = timestampKey.Id,
            CreatedAt = SignedDocuments.Second(now ?? DateTimeOffset.UtcNow),
        };
        Validate(timestamp);
        var (envelope, _) = SignedDocuments.Sign(timestamp, ReleaseTimestamp.DocumentType,
            MetadataJson.Default.ReleaseTimestamp, timestampKey);
        return Read(envelope);
    }

    public static SignedReleaseTimestamp Read(string text) => Read(Encoding.UTF8.GetBytes(text));

    public static SignedReleaseTimestamp Read(ReadOnlySpan<byte> input)
    {
        var (timestamp, payload, keyId, signature) =
            SignedDocuments.Read(input, "release timestamp", MetadataJson.Default.ReleaseTimestamp);
        Validate(timestamp);
        if (timestamp.TimestampKeyId != keyId) throw SignedDocuments.Invalid($"the timestamp names key " +
            $"{timestamp.TimestampKeyId} but is signed by {keyId}");
        return new SignedReleaseTimestamp(input.ToArray(), timestamp, payload, keyId, signature);
    }

    private static void Validate(ReleaseTimestamp t)
    {
        if (t.Type != ReleaseTimestamp.DocumentType)
            throw SignedDocuments.Invalid($"the document is a '{t.Type}', not a release timestamp");
        if (t.BuildId.ToString().Length == 0 || t.MetadataSha256.IsEmpty || t.MetadataVersion < 1)
            throw SignedDocuments.Invalid("the timestamp names no metadata");
        if (t.Expires.Offset != TimeSpan.Zero || t.CreatedAt.Offset != TimeSpan.Zero)
            throw SignedDocuments.Invalid("times must be in UTC");
    }

    /// <summary>
    /// Checks that a timestamp key of <paramref name="trust"/> signed this, for exactly <paramref name="metadata"/>.
    /// A publisher key cannot sign timestamps and a timestamp key cannot sign metadata or bundles: each role has its
    /// own keys.
    /// </summary>
    public void Verify(TrustStore trust, SignedReleaseMetadata metadata)
    {
        var key = trust.FindTimestampKey(KeyId) ?? throw new BundleException(BundleFailure.UnknownKey,
            $"the release timestamp is signed by key {KeyId}, which is not a timestamp key in trust store " +
            $"{trust.Directory}");
        if (!key.VerifySignature(SignedDocuments.SignedBytes(ReleaseTimestamp.DocumentType, _payload), _signature))
            throw new BundleException(BundleFailure.BadSignature,
                $"the release timestamp's signature does not verify for key {KeyId}");
        if (Timestamp.BuildId != metadata.Metadata.BuildId
            || Timestamp.MetadataVersion != metadata.Metadata.Version || Timestamp.MetadataSha256 != metadata.Digest)
            throw new BundleException(BundleFailure.WrongTarget,
                $"the release timestamp is for metadata version {Timestamp.MetadataVersion} " +
                $"({Timestamp.MetadataSha256}) of build-id {Timestamp.BuildId}, not for {metadata}");
    }
}
