using System.Text;

namespace Kintsugi.Bundles;

/// <summary>
/// A trust-root update (docs/security.md, "Trust-root updates"): signed by an offline root key, it tells machines
/// which publisher keys to trust, which to retire and which timestamp keys to add. It carries the whole list as of
/// its <see cref="Version"/> (applying it twice changes nothing), and versions only go up, so a server cannot replay
/// an older one. It cannot remove a retirement, touch the root keys, or say anything about levels.
/// </summary>
public sealed record TrustRoot
{
    public const string DocumentType = "kintsugi-trust-root";

    public required string Type { get; init; }

    /// <summary>A counter, at least 1, raised by every new update.</summary>
    public required long Version { get; init; }

    /// <summary>Publisher keys to trust: SubjectPublicKeyInfo DER in base64, ordered by key id.</summary>
    public required IReadOnlyList<string> Trusted { get; init; }

    /// <summary>Publisher keys to retire (one-way), the same form.</summary>
    public required IReadOnlyList<string> Retired { get; init; }

    /// <summary>Online timestamp keys to add, the same form.</summary>
    public required IReadOnlyList<string> Timestamp { get; init; }

    public required PublisherKeyId RootKeyId { get; init; }

    public required DateTimeOffset CreatedAt { get; init; }
}

/// <summary>A trust-root update as carried, parsed (keys decoded) but not yet trusted.</summary>
public sealed class SignedTrustRoot
{
    /// <summary>Where a trust store keeps the newest update it applied, and where an offline directory may carry
    /// one.</summary>
    public const string FileName = "trust-root.json";

    private readonly byte[] _envelope;
    private readonly byte[] _payload;
    private readonly byte[] _signature;

    public TrustRoot Root { get; }
    public PublisherKeyId KeyId { get; }
    public IReadOnlyList<PublisherPublicKey> Trusted { get; }
    public IReadOnlyList<PublisherPublicKey> Retired { get; }
    public IReadOnlyList<PublisherPublicKey> TimestampKeys { get; }

    private SignedTrustRoot(byte[] envelope, TrustRoot root, byte[] payload, PublisherKeyId keyId, byte[] signature)
    {
        _envelope = envelope;
        Root = root;
        _payload = payload;
        KeyId = keyId;
        _signature = signature;
        Trusted = Keys(root.Trusted, "trusted");
        Retired = Keys(root.Retired, "retired");
        TimestampKeys = Keys(root.Timestamp, "timestamp");
    }

    public string Text => Encoding.UTF8.GetString(_envelope);

    public static SignedTrustRoot
        Create(long version, IEnumerable<PublisherPublicKey> trusted, IEnumerable<PublisherPublicKey> retired,
        IEnumerable<PublisherPublicKey> timestamp, PublisherKey rootKey, DateTimeOffset? now = null)
    {
        static IReadOnlyList<string> Encode(IEnumerable<PublisherPublicKey> keys) =>
            [.. keys.DistinctBy(k => k.Id).OrderBy(k => k.Id.ToString(), StringComparer.Ordinal)
            .Select(k => Convert.ToBase64String(k.SubjectPublicKeyInfo.Span))];
        var root = new TrustRoot
        {
            Type = TrustRoot.DocumentType,
            Version = version,
            Trusted = Encode(trusted),
            Retired = Encode(retired),
            Timestamp = Encode(timestamp),
            RootKeyId = rootKey.Id,
            CreatedAt = SignedDocuments.Second(now ?? DateTimeOffset.UtcNow),
        };
        Validate(root);
        var (envelope, _) = SignedDocuments.Sign(root, TrustRoot.DocumentType, MetadataJson.Default.TrustRoot, rootKey);
        return Read(envelope);
    }

    public static SignedTrustRoot Read(string text) => Read(Encoding.UTF8.GetBytes(text));

    /// <summary>Parses, validates and decodes the keys; refuses non-canonical payloads. Does not check the
    /// signature.</summary>
    public static SignedTrustRoot Read(ReadOnlySpan<byte> input)
    {
        var (root, payload, keyId, signature) =
            SignedDocuments.Read(input, "trust-root update", MetadataJson.Default.TrustRoot);
        Validate(root);
        if (root.RootKeyId != keyId) throw SignedDocuments.Invalid($"the trust-root update names root key " +
            $"{root.RootKeyId} but is signed by {keyId}");
        try { return new SignedTrustRoot(input.ToArray(), root, payload, keyId, signature); }
        catch (BundleException e) when (e.Failure == BundleFailure.KeyFile)
        {
            throw SignedDocuments.Invalid($"the " +
            $"trust-root update holds a bad key: {e.Message}", e);
        }
    }

    private static void Validate(TrustRoot r)
    {
        if (r.Type != TrustRoot.DocumentType)
            throw SignedDocuments.Invalid($"the document is a '{r.Type}', not a trust-root update");
        if (r.Version < 1) throw SignedDocuments.Invalid($"version {r.Version} is not a positive integer");
        if (r.Trusted is null || r.Retired is null || r.Timestamp is null)
            throw SignedDocuments.Invalid("the key lists are missing (use empty lists)");
        if (r.Trusted.Count + r.Retired.Count + r.Timestamp.Count > 1000)
            throw SignedDocuments.Invalid("too many keys");
        if (r.CreatedAt.Offset != TimeSpan.Zero) throw SignedDocuments.Invalid("times must be in UTC");
    }

    private static IReadOnlyList<PublisherPublicKey> Keys(IReadOnlyList<string> encoded, string list)
    {
        var keys =
            encoded.Select(k => PublisherPublicKey.FromSubjectPublicKeyInfo(Convert.FromBase64String(k))).ToList();
        for (var i = 1; i < keys.Count; i++)
            if (string.CompareOrdinal(keys[i - 1].Id.ToString(), keys[i].Id.ToString()) >= 0)
                throw SignedDocuments.Invalid($"the {list} keys must be ordered by key id, each once");
        return keys;
    }

    /// <summary>Checks that a root key pinned in <paramref name="trust"/> signed this update.</summary>
    public void Verify(TrustStore trust)
    {
        var key = trust.FindRootKey(KeyId) ?? throw new BundleException(BundleFailure.UnknownKey,
            $"the trust-root update is signed by key {KeyId}, which is not a root key in trust store " +
            $"{trust.Directory}");
        if (!key.VerifySignature(SignedDocuments.SignedBytes(TrustRoot.DocumentType, _payload), _signature))
            throw new BundleException(BundleFailure.BadSignature, $"the trust-root update's signature does not " +
                $"verify for root key {KeyId}: it was altered after signing");
    }

    public override string ToString() => $"trust-root update version {Root.Version} (root key {KeyId})";
}
