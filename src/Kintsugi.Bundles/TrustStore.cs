namespace Kintsugi.Bundles;

/// <summary>Whether bundles signed by a key are accepted.</summary>
public enum KeyState
{
    /// <summary>Bundles signed by this key verify.</summary>
    Trusted,
    /// <summary>The key was rotated out or compromised: its bundles are refused, whenever they were signed.</summary>
    Retired,
}

/// <summary>A public key in a trust store, with its state.</summary>
public sealed record TrustedKey(PublisherPublicKey Key, KeyState State)
{
    public PublisherKeyId Id => Key.Id;
}

/// <summary>
/// The publisher keys a machine (or server) pins: a directory with <c>trusted/&lt;key id&gt;.pem</c> and
/// <c>retired/&lt;key id&gt;.pem</c>, each a SubjectPublicKeyInfo PEM. A key in both is retired.
/// Rotation: add the new key, re-sign current bundles with it, distribute them, then retire the old key.
/// Retirement is one-way through this API (a retired key may have been compromised).
/// </summary>
public sealed class TrustStore
{
    public const string TrustedDirectoryName = "trusted";
    public const string RetiredDirectoryName = "retired";

    /// <summary>Online timestamp keys: they can only extend release metadata's freshness
    /// (docs/bundle-format.md).</summary>
    public const string TimestampDirectoryName = "timestamp";

    /// <summary>Offline root keys: they sign trust-root updates (docs/security.md), and nothing else.</summary>
    public const string RootDirectoryName = "root";

    private readonly Dictionary<PublisherKeyId, TrustedKey> _keys;
    private readonly Dictionary<PublisherKeyId, PublisherPublicKey> _timestampKeys;
    private readonly Dictionary<PublisherKeyId, PublisherPublicKey> _rootKeys;

    /// <summary>The directory the store lives in.</summary>
    public string Directory { get; }

    private TrustStore(string directory, Dictionary<PublisherKeyId, TrustedKey> keys, Dictionary<PublisherKeyId,
        PublisherPublicKey> timestampKeys,
        Dictionary<PublisherKeyId, PublisherPublicKey> rootKeys)
    {
        Directory = directory;
        _keys = keys;
        _timestampKeys = timestampKeys;
        _rootKeys = rootKeys;
    }

    /// <summary>The root keys, ordered by id.</summary>
    public IReadOnlyList<PublisherPublicKey> RootKeys =>
        [.. _rootKeys.Values.OrderBy(k => k.Id.ToString(), StringComparer.Ordinal)];

    public PublisherPublicKey? FindRootKey(PublisherKeyId id) => _rootKeys.GetValueOrDefault(id);

    /// <summary>The timestamp keys, ordered by id.</summary>
    public IReadOnlyList<PublisherPublicKey> TimestampKeys =>
        [.. _timestampKeys.Values.OrderBy(k => k.Id.ToString(), StringComparer.Ordinal)];

    public PublisherPublicKey? FindTimestampKey(PublisherKeyId id) => _timestampKeys.GetValueOrDefault(id);

    /// <summary>Every key, ordered by id.</summary>
    public IReadOnlyList<TrustedKey> Keys => [.. _keys.Values.OrderBy(k => k.Id.ToString(), StringComparer.Ordinal)];

    /// <summary>
    /// Loads the store. A missing directory is an empty store (every bundle is then refused as signed by
    /// an unknown key). A key file whose name is not its key's id, or that is not a P-256 public key, is
    /// refused with <see cref="BundleException"/>, so a damaged store never silently drops a retirement.
    /// </summary>
    public static TrustStore Open(string directory)
    {
        var keys = new Dictionary<PublisherKeyId, TrustedKey>();
        foreach (var (subdirectory, state) in new[] { (TrustedDirectoryName, KeyState.Trusted),
            (RetiredDirectoryName, KeyState.Retired) })
            foreach (var key in LoadKeys(directory, subdirectory))
                // Retired wins over trusted (a retirement interrupted half way still counts).
                if (state == KeyState.Retired || !keys.ContainsKey(key.Id)) keys[key.Id] = new TrustedKey(key, state);
        var timestampKeys = new Dictionary<PublisherKeyId, PublisherPublicKey>();
        foreach (var key in LoadKeys(directory, TimestampDirectoryName))
        {
            // One key, one role: a timestamp key that could also sign bundles would be more than a freshness key.
            if (keys.ContainsKey(key.Id))
                throw new BundleException(BundleFailure.TrustStore, $"trust store {directory}: key {key.Id} is both " +
                    $"a publisher key and a timestamp key; generate a separate timestamp key");
            timestampKeys[key.Id] = key;
        }
        var rootKeys = new Dictionary<PublisherKeyId, PublisherPublicKey>();
        foreach (var key in LoadKeys(directory, RootDirectoryName))
        {
            if (keys.ContainsKey(key.Id) || timestampKeys.ContainsKey(key.Id))
                throw new BundleException(BundleFailure.TrustStore, $"trust store {directory}: key {key.Id} is both " +
                    $"a root key and a publisher or timestamp key; generate a separate root key");
            rootKeys[key.Id] = key;
        }
        return new TrustStore(directory, keys, timestampKeys, rootKeys);
    }

    private static IEnumerable<PublisherPublicKey> LoadKeys(string directory, string subdirectory)
    {
        var path = Path.Combine(directory, subdirectory);
        if (!System.IO.Directory.Exists(path)) yield break;
        foreach (var file in System.IO.Directory.EnumerateFiles(path, "*.pem").Order(StringComparer.Ordinal))
        {
            PublisherPublicKey key;
            try { key = PublisherPublicKey.Load(file); }
            catch (BundleException e)
            {
                throw new BundleException(BundleFailure.TrustStore,
                    $"trust store {directory}: {e.Message}; remove or fix that file", e);
            }
            if (Path.GetFileNameWithoutExtension(file) != key.Id.ToString())
                throw new BundleException(BundleFailure.TrustStore, $"trust store {directory}: {file} holds key " +
                    $"{key.Id}, not the key its name says; rename it to {key.Id}.pem");
            yield return key;
        }
    }

    public TrustedKey? Find(PublisherKeyId id) => _keys.GetValueOrDefault(id);

    /// <summary>Trusts a key (idempotent). A retired key cannot be trusted again.</summary>
    public TrustedKey Add(PublisherPublicKey key)
    {
        ArgumentNullException.ThrowIfNull(key);
        RefuseRootKey(key);
        if (_timestampKeys.ContainsKey(key.Id))
            throw new BundleException(BundleFailure.TrustStore,
                $"key {key.Id} is a timestamp key here; a publisher key must be a separate key");
        if (_keys.TryGetValue(key.Id, out var existing))
        {
            if (existing.State == KeyState.Retired)
                throw new BundleException(BundleFailure.TrustStore,
                    $"key {key.Id} was retired and cannot be trusted again; generate a new publisher key and re-sign");
            return existing;
        }
        var directory = Path.Combine(Directory, TrustedDirectoryName);
        Write(directory, key);
        return _keys[key.Id] = new TrustedKey(key, KeyState.Trusted);
    }

    /// <summary>Adds an online timestamp key (idempotent): it can extend release metadata's expiry, nothing
    /// else.</summary>
    public PublisherPublicKey AddTimestampKey(PublisherPublicKey key)
    {
        ArgumentNullException.ThrowIfNull(key);
        RefuseRootKey(key);
        if (_keys.ContainsKey(key.Id))
            throw new BundleException(BundleFailure.TrustStore,
                $"key {key.Id} is a publisher key here; a timestamp key must be a separate key");
        if (_timestampKeys.TryGetValue(key.Id, out var existing)) return existing;
        Write(Path.Combine(Directory, TimestampDirectoryName), key);
        return _timestampKeys[key.Id] = key;
    }

    /// <summary>
    /// Pins an offline root key (idempotent): it can sign trust-root updates that trust, retire or add keys here. Root
    /// keys change only by hand on the machine (or its image), never through an update.
    /// </summary>
    public PublisherPublicKey AddRootKey(PublisherPublicKey key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (_keys.ContainsKey(key.Id) || _timestampKeys.ContainsKey(key.Id))
            throw new BundleException(BundleFailure.TrustStore,
                $"key {key.Id} is a publisher or timestamp key here; a root key must be a separate key");
        if (_rootKeys.TryGetValue(key.Id, out var existing)) return existing;
        Write(Path.Combine(Directory, RootDirectoryName), key);
        return _rootKeys[key.Id] = key;
    }

    private void RefuseRootKey(PublisherPublicKey key)
    {
        if (_rootKeys.ContainsKey(key.Id))
            throw new BundleException(BundleFailure.TrustStore,
                $"key {key.Id} is a root key here; publisher and timestamp keys must be separate keys");
    }

    /// <summary>
    /// Retires a key (idempotent): from now on its bundles are refused. The retired file is written
    /// before the trusted one is removed, so an interruption leaves the key retired.
    /// </summary>
    public TrustedKey Retire(PublisherKeyId id)
    {
        if (!_keys.TryGetValue(id, out var existing))
            throw new BundleException(BundleFailure.TrustStore,
                $"key {id} is not in trust store {Directory}; nothing to retire");
        if (existing.State == KeyState.Retired) return existing;
        Write(Path.Combine(Directory, RetiredDirectoryName), existing.Key);
        File.Delete(Path.Combine(Directory, TrustedDirectoryName, id + ".pem"));
        return _keys[id] = existing with { State = KeyState.Retired };
    }

    /// <summary>Retires a key whether or not it was known here, so that it can never be trusted later
    /// (idempotent).</summary>
    public TrustedKey Retire(PublisherPublicKey key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (_keys.ContainsKey(key.Id)) return Retire(key.Id);
        RefuseRootKey(key);
        if (_timestampKeys.ContainsKey(key.Id))
            throw new BundleException(BundleFailure.TrustStore,
                $"key {key.Id} is a timestamp key here, not a publisher key; nothing to retire");
        Write(Path.Combine(Directory, RetiredDirectoryName), key);
        return _keys[key.Id] = new TrustedKey(key, KeyState.Retired);
    }

    /// <summary>The newest trust-root update applied to this store, or null.</summary>
    public SignedTrustRoot? AppliedRoot
    {
        get
        {
            var path = Path.Combine(Directory, SignedTrustRoot.FileName);
            if (!File.Exists(path)) return null;
            // Kept after verification in root's directory: a damaged one is refused loudly, never taken as "none".
            try { return SignedTrustRoot.Read(File.ReadAllText(path)); }
            catch (BundleException e)
            {
                throw new BundleException(BundleFailure.TrustStore,
                $"trust store {Directory}: {path} is damaged ({e.Message}); restore it", e);
            }
        }
    }

    /// <summary>
    /// Applies a trust-root update signed by one of this store's root keys: retirements first (one-way), then the
    /// publisher keys to trust (a key retired here stays retired), then timestamp keys. Refuses an update older than
    /// the one applied, or a different one under the same version. Returns what changed (empty: nothing new).
    /// </summary>
    public IReadOnlyList<string> Apply(SignedTrustRoot update)
    {
        ArgumentNullException.ThrowIfNull(update);
        update.Verify(this);
        if (AppliedRoot is { } applied)
        {
            if (update.Root.Version < applied.Root.Version)
                throw new BundleException(BundleFailure.InvalidMetadata,
                    $"{update} is older than version {applied.Root.Version} applied to trust store {Directory}; " +
                    $"refused (a rollback of the trust root)");
            if (update.Root.Version == applied.Root.Version)
                return update.Text == applied.Text ? [] : throw new BundleException(BundleFailure.InvalidMetadata,
                    $"{update} differs from the version {applied.Root.Version} applied to trust store {Directory}; " +
                    $"refused (two statements under one version)");
        }
        var changes = new List<string>();
        foreach (var key in update.Retired)
            if (Find(key.Id) is not { State: KeyState.Retired }) { Retire(key); changes.Add($"retired key {key.Id}"); }
        foreach (var key in update.Trusted)
        {
            if (Find(key.Id) is { State: KeyState.Retired })
            {
                changes.Add($"key {key.Id} stays retired (the update " +
                $"lists it as trusted)"); continue;
            }
            if (Find(key.Id) is null) { Add(key); changes.Add($"trusted key {key.Id}"); }
        }
        foreach (var key in update.TimestampKeys)
            if (FindTimestampKey(key.Id) is null && Find(key.Id) is null
                && FindRootKey(key.Id) is null) { AddTimestampKey(key); changes.Add($"timestamp key {key.Id} added"); }
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            AtomicWriteText(Path.Combine(Directory, SignedTrustRoot.FileName), update.Text);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BundleException(BundleFailure.TrustStore, $"cannot write to trust store {Directory}: {e.Message}",
                e);
        }
        changes.Insert(0, $"applied {update}");
        return changes;
    }

    private static void AtomicWriteText(string path, string text)
    {
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, text);
        File.Move(temporary, path, overwrite: true);
    }

    private void Write(string directory, PublisherPublicKey key)
    {
        try
        {
            System.IO.Directory.CreateDirectory(directory);
            var path = Path.Combine(directory, key.Id + ".pem");
            var temporary = path + ".tmp";
            key.Save(temporary);
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BundleException(BundleFailure.TrustStore, $"cannot write to trust store {Directory}: {e.Message}",
                e);
        }
    }
}
