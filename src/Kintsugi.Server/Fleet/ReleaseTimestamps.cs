using System.Collections.Concurrent;
using Kintsugi.Bundles;

namespace Kintsugi.Server.Fleet;

/// <summary>
/// The server's online timestamp key (docs/bundle-format.md, "Release metadata"): it signs, for the newest release
/// metadata of each build, "still current until now + lifetime", so the publisher's key can stay offline while
/// agents can tell a live server from one that froze. The key cannot change levels or revocations; whoever steals
/// it can only keep old metadata looking fresh, which is why it is separate from every publisher key.
/// </summary>
public sealed class ReleaseTimestamps
{
    private readonly PublisherKey _key;
    private readonly TimeSpan _lifetime;
    private readonly ConcurrentDictionary<Sha256Digest, SignedReleaseTimestamp> _issued = new();

    public ReleaseTimestamps(ServerOptions options)
    {
        _lifetime = options.TimestampLifetime;
        _key = LoadOrCreate(options.TimestampKeyPath);
    }

    public PublisherPublicKey PublicKey => _key.PublicKey;

    /// <summary>Reads the key, or makes one (mode 0600 from creation) with its public half beside it (.pub).</summary>
    public static PublisherKey LoadOrCreate(string path)
    {
        if (File.Exists(path)) return PublisherKey.Load(path);
        OwnerOnly.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var key = PublisherKey.Generate();
        try
        {
            key.Save(path);
        }
        catch (BundleException) when (File.Exists(path))
        {
            // Another replica made it first.
            key.Dispose();
            return PublisherKey.Load(path);
        }
        key.PublicKey.Save(Path.ChangeExtension(path, ".pub"));
        return key;
    }

    /// <summary>A timestamp for <paramref name="metadataText"/>, re-signed once half its lifetime has passed; null
    /// without metadata.</summary>
    public string? For(string? metadataText)
    {
        if (metadataText is null) return null;
        var metadata = SignedReleaseMetadata.Read(metadataText);
        var now = DateTimeOffset.UtcNow;
        var timestamp = _issued.AddOrUpdate(metadata.Digest,
            _ => SignedReleaseTimestamp.Create(metadata, now + _lifetime, _key, now),
            (_, old) => old.Timestamp.Expires - now < _lifetime / 2
                ? SignedReleaseTimestamp.Create(metadata, now + _lifetime, _key, now) : old);
        return timestamp.Text;
    }
}
