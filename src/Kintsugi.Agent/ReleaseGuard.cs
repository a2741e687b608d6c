using Kintsugi.Bundles;
using Kintsugi.Kernel;

namespace Kintsugi.Agent;

/// <summary>How fresh the agent's signed release metadata is, as the check-in reports it.</summary>
public enum MetadataFreshness
{
    /// <summary>No signed release metadata has been seen for this kernel build.</summary>
    None,
    /// <summary>Signed, and not expired (its own expiry, or a timestamp's extension).</summary>
    Fresh,
    /// <summary>Expired: the server may be withholding newer metadata (a freeze). Reported, not obeyed
    /// blindly.</summary>
    Stale,
}

/// <summary>
/// The agent's one place for release-metadata policy (docs/bundle-format.md, "Release metadata"). It keeps the
/// newest signed metadata it has seen for one build-id (the running kernel's, or a user-space object's) and the newest
/// timestamp for it, never takes an older version, and decides whether a level the server offers may run and whether
/// a server's <c>remove</c> may be obeyed. What the server says without a signature can withhold patches, never
/// roll a machine back.
/// </summary>
public sealed class ReleaseGuard
{
    private readonly string _directory;
    private readonly BuildId _build;
    private readonly Func<DateTimeOffset> _clock;
    private readonly bool _readOnly;
    private readonly string _subject;

    /// <param name="subject">What the build-id is, for messages: "this kernel" or "object NAME".</param>
    /// <param name="readOnly">Judge as the agent would, keeping what is taken in memory only (<c>agent check</c>
    /// applies nothing, and changes nothing the next real check will see).</param>
    public ReleaseGuard(string stateDirectory, BuildId build, Func<DateTimeOffset>? clock = null, bool readOnly = false,
        string subject = "this kernel")
    {
        _subject = subject;
        _directory = Path.Combine(stateDirectory, "metadata");
        _build = build;
        _clock = clock ?? (() => DateTimeOffset.UtcNow);
        _readOnly = readOnly;
        Metadata = ReadKept(MetadataPath, SignedReleaseMetadata.Read);
        Timestamp = Metadata is null ? null : ReadKept(TimestampPath, SignedReleaseTimestamp.Read);
    }

    private string MetadataPath => Path.Combine(_directory, _build + ".metadata.json");
    private string TimestampPath => Path.Combine(_directory, _build + ".timestamp.json");

    /// <summary>The newest signed metadata seen for this build (verified when it was taken), or null.</summary>
    public SignedReleaseMetadata? Metadata { get; private set; }

    /// <summary>The timestamp with the latest expiry seen for <see cref="Metadata"/>, or null.</summary>
    public SignedReleaseTimestamp? Timestamp { get; private set; }

    /// <summary>The metadata's expiry, extended by its timestamp when that is later.</summary>
    public DateTimeOffset? Expires => Metadata is null ? null
        : Timestamp is { } t && t.Timestamp.Expires > Metadata.Metadata.Expires ? t.Timestamp.Expires
        : Metadata.Metadata.Expires;

    public MetadataFreshness Freshness => Expires is not { } expires ? MetadataFreshness.None
        : expires <= _clock() ? MetadataFreshness.Stale : MetadataFreshness.Fresh;

    /// <summary>One line for people: which version, and whether it is stale.</summary>
    public string Describe() => Metadata is not { } m ? $"no signed release metadata for {_subject}"
        : $"release metadata version {m.Metadata.Version} (current level {m.Metadata.CurrentLevel}, minimum " +
        $"{m.Metadata.MinimumLevel}" +
          (m.Metadata.RevokedLevels.Count > 0 ? $", revoked {string.Join(",", m.Metadata.RevokedLevels)}" : "") + ")" +
          (Freshness == MetadataFreshness.Stale ? $" is stale: it expired at {Expires:u}; the server may be " +
          $"withholding newer metadata" : $", fresh until {Expires:u}");

    /// <summary>
    /// Takes what the server sent: metadata newer than the kept one (verified against the trust store for this
    /// build) and a timestamp extending it. Returns the refusals, for the log and the check-in; anything refused
    /// leaves the kept state as it was.
    /// </summary>
    public IReadOnlyList<string> Offer(string? metadataText, string? timestampText, TrustStore trust)
    {
        var refusals = new List<string>();
        // Metadata kept from a key retired since says nothing any more: a stolen key must not leave behind a version
        // so high (or a minimum so strict) that the publisher's new key can never speak again.
        if (Metadata is { } stale && trust.Find(stale.KeyId) is { State: KeyState.Retired })
        {
            refusals.Add($"release metadata version {stale.Metadata.Version} kept here is signed by key " +
                $"{stale.KeyId}, retired since; dropped");
            Metadata = null;
            Timestamp = null;
            Forget(MetadataPath);
            Forget(TimestampPath);
        }
        if (metadataText is not null)
        {
            try
            {
                var offered = SignedReleaseMetadata.Read(metadataText);
                offered.Verify(trust, _build);
                if (Metadata is { } kept && offered.Metadata.Version < kept.Metadata.Version)
                    refusals.Add($"the server sent release metadata version {offered.Metadata.Version}, older than " +
                        $"version {kept.Metadata.Version} kept here; refused (a rollback of the metadata)");
                else if (Metadata is { } same && offered.Metadata.Version == same.Metadata.Version
                    && offered.Digest != same.Digest)
                    refusals.Add($"the server sent a different release metadata version {offered.Metadata.Version} " +
                        $"than the one kept here; refused (two statements under one version)");
                else if (Metadata is null || offered.Metadata.Version > Metadata.Metadata.Version)
                {
                    Keep(MetadataPath, offered.Text);
                    Metadata = offered;
                    Timestamp = null;
                    Forget(TimestampPath);
                }
            }
            catch (BundleException e) { refusals.Add($"release metadata refused: {e.Message}"); }
        }
        if (timestampText is not null && Metadata is { } metadata)
        {
            try
            {
                var timestamp = SignedReleaseTimestamp.Read(timestampText);
                timestamp.Verify(trust, metadata);
                if (Timestamp is null || timestamp.Timestamp.Expires > Timestamp.Timestamp.Expires)
                {
                    Keep(TimestampPath, timestamp.Text);
                    Timestamp = timestamp;
                }
            }
            catch (BundleException e) { refusals.Add($"release timestamp refused: {e.Message}"); }
        }
        return refusals;
    }

    /// <summary>
    /// Why <paramref name="offered"/> must not be applied while <paramref name="applied"/> runs, or null. A level
    /// the metadata forbids is refused; going down is taken only when signed metadata forbids the running level.
    /// </summary>
    public string? Refuse(int offered, int? applied)
    {
        if (Metadata?.Metadata is { } m && m.Forbids(offered) is { } forbidden) return $"{forbidden}; refused";
        if (applied is { } running && offered < running && RunningLevelForbidden(running) is null)
            return $"level {offered} is below the running level {running}, and " +
                   (Metadata is null ? $"no signed release metadata for {_subject}"
                   : $"signed release metadata version {Metadata.Metadata.Version}") +
                   $" revokes level {running}; a rollback is refused (the server alone cannot order one)";
        return null;
    }

    /// <summary>Why a server's <c>remove</c> must not be obeyed while <paramref name="applied"/> runs, or
    /// null.</summary>
    public string? RefuseRemove(int? applied)
    {
        if (applied is not { } running) return null;
        if (RunningLevelForbidden(running) is not null) return null;
        return $"the server asked to remove every patch of {_subject}, but " +
               (Metadata is null ? $"no signed release metadata for {_subject}"
               : $"signed release metadata version {Metadata.Metadata.Version}") +
               $" revokes the running level {running}; refused, level {running} keeps running";
    }

    /// <summary>Why signed metadata forbids <paramref name="level"/> to keep running, or null (also null without
    /// metadata: only a signed statement takes a level out).</summary>
    public string? Forbids(int level) => Metadata?.Metadata.Forbids(level);

    private string? RunningLevelForbidden(int running) => Forbids(running);

    private T? ReadKept<T>(string path, Func<string, T> read) where T : class
    {
        if (!File.Exists(path)) return null;
        // Kept files were verified when taken and live in root's state directory; a damaged one is dropped, not
        // trusted.
        try { return read(File.ReadAllText(path)); }
        catch (BundleException) { return null; }
    }

    private void Forget(string path)
    {
        if (!_readOnly) File.Delete(path);
    }

    private void Keep(string path, string text)
    {
        if (_readOnly) return;
        Directory.CreateDirectory(_directory);
        AtomicFile.WriteText(path, text);
    }
}
