using System.Buffers.Binary;

namespace Kintsugi.Bundles;

/// <summary>
/// A parsed bundle file: header, canonical JSON manifest, module bytes and signature block (layout in
/// docs/bundle-format.md). A <see cref="Bundle"/> is well-formed but NOT yet trusted: only
/// <see cref="BundleVerifier.Verify"/> says whether a trusted publisher signed it for this kernel.
/// </summary>
public sealed class Bundle
{
    /// <summary>The 8 bytes every bundle starts with.</summary>
    public static ReadOnlySpan<byte> Magic => "KINTSUGI"u8;

    /// <summary>The one envelope version this build reads and writes.</summary>
    public const ushort CurrentFormatVersion = 1;

    public const int HeaderLength = 32;

    /// <summary>Signature algorithm 1: ECDSA over NIST P-256 with SHA-256, signature as IEEE P1363 r||s (64
    /// bytes).</summary>
    public const ushort EcdsaP256Sha256 = 1;

    /// <summary>algorithm (2) + signature length (2) + key id (16) + signature (64).</summary>
    public const int SignatureBlockLength = 2 + 2 + PublisherKeyId.Length + PublisherPublicKey.SignatureLength;

    public const int MaxManifestLength = 1024 * 1024;

    /// <summary>Livepatch modules are kilobytes to a few megabytes; anything above this is refused.</summary>
    public const long MaxModuleLength = 64L * 1024 * 1024;

    public const long MaxLength = HeaderLength + MaxManifestLength + MaxModuleLength + SignatureBlockLength;

    private readonly byte[] _bytes;
    private readonly int _manifestLength;
    private readonly int _moduleLength;

    private Bundle(byte[] bytes, int manifestLength, int moduleLength, BundleManifest manifest, PublisherKeyId keyId)
    {
        _bytes = bytes;
        _manifestLength = manifestLength;
        _moduleLength = moduleLength;
        Manifest = manifest;
        KeyId = keyId;
    }

    public int FormatVersion => CurrentFormatVersion;

    /// <summary>The manifest as the file states it (not yet verified).</summary>
    public BundleManifest Manifest { get; }

    /// <summary>The id of the key the signature block names (equal to <see
    /// cref="BundleManifest.PublisherKeyId"/>).</summary>
    public PublisherKeyId KeyId { get; }

    /// <summary>The livepatch module (.ko) bytes (not yet verified).</summary>
    public ReadOnlyMemory<byte> Module => _bytes.AsMemory(HeaderLength + _manifestLength, _moduleLength);

    /// <summary>The canonical manifest JSON exactly as stored.</summary>
    public ReadOnlyMemory<byte> ManifestJson => _bytes.AsMemory(HeaderLength, _manifestLength);

    /// <summary>The bytes the signature covers: the header followed by the manifest.</summary>
    internal ReadOnlySpan<byte> SignedBytes => _bytes.AsSpan(0, HeaderLength + _manifestLength);

    public ReadOnlyMemory<byte> Signature => _bytes.AsMemory(_bytes.Length - PublisherPublicKey.SignatureLength);

    /// <summary>The whole file's length in bytes.</summary>
    public int Length => _bytes.Length;

    /// <summary>A copy of the whole file.</summary>
    public byte[] ToArray() => (byte[])_bytes.Clone();

    /// <summary>The whole file as read: a read-only view, not a copy (a large bundle is not duplicated to hash or
    /// store it).</summary>
    public ReadOnlyMemory<byte> Bytes => _bytes;

    public void WriteTo(Stream stream) => stream.Write(_bytes);

    /// <summary>Writes the bundle to a file (through a temporary file and a rename, so readers never see half of
    /// it).</summary>
    public void Save(string path)
    {
        var temporary = path + ".tmp-" + Environment.ProcessId;
        File.WriteAllBytes(temporary, _bytes);
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>
    /// Signs a module: builds the manifest from <paramref name="description"/>, the module's size and
    /// SHA-256 and the key's id, and returns the signed bundle. Throws <see cref="BundleException"/>
    /// (InvalidManifest) when a field is out of range.
    /// </summary>
    public static Bundle Create(ReadOnlySpan<byte> module, BundleDescription description, PublisherKey key)
    {
        ArgumentNullException.ThrowIfNull(description);
        ArgumentNullException.ThrowIfNull(key);
        if (module.Length == 0) throw new BundleException(BundleFailure.InvalidManifest, "the module is empty");
        if (module.Length > MaxModuleLength) throw new BundleException(BundleFailure.InvalidManifest,
            $"the module is {module.Length} bytes; bundles hold at most {MaxModuleLength}");
        var manifest = new BundleManifest
        {
            Target = description.Target,
            Object = description.Object,
            CumulativeLevel = description.CumulativeLevel,
            Fixes = description.Fixes,
            PatchedFunctions = description.PatchedFunctions,
            ModuleSize = module.Length,
            ModuleSha256 = Sha256Digest.Of(module),
            PublisherKeyId = key.Id,
            CreatedAt = description.CreatedAt.ToUniversalTime(),
            BuilderVersion = description.BuilderVersion,
            EffectivePackageVersion = description.EffectivePackageVersion,
        };
        ManifestCodec.Validate(manifest);
        var json = ManifestCodec.Serialize(manifest);
        if (json.Length > MaxManifestLength) throw new BundleException(BundleFailure.InvalidManifest,
            $"the manifest is {json.Length} bytes; at most {MaxManifestLength}");

        var bytes = new byte[HeaderLength + json.Length + module.Length + SignatureBlockLength];
        var span = bytes.AsSpan();
        Magic.CopyTo(span);
        BinaryPrimitives.WriteUInt16LittleEndian(span[8..], CurrentFormatVersion);
        BinaryPrimitives.WriteUInt16LittleEndian(span[10..], 0);
        BinaryPrimitives.WriteUInt32LittleEndian(span[12..], (uint)json.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(span[16..], (ulong)module.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(span[24..], SignatureBlockLength);
        BinaryPrimitives.WriteUInt32LittleEndian(span[28..], 0);
        json.CopyTo(span[HeaderLength..]);
        module.CopyTo(span[(HeaderLength + json.Length)..]);

        var signature = key.Sign(span[..(HeaderLength + json.Length)]);
        var block = span[(HeaderLength + json.Length + module.Length)..];
        BinaryPrimitives.WriteUInt16LittleEndian(block, EcdsaP256Sha256);
        BinaryPrimitives.WriteUInt16LittleEndian(block[2..], (ushort)signature.Length);
        key.Id.WriteTo(block.Slice(4, PublisherKeyId.Length));
        signature.CopyTo(block[(4 + PublisherKeyId.Length)..]);
        return Read(bytes);
    }

    /// <summary>
    /// Parses a bundle. Refuses, with <see cref="BundleException"/>, anything that is not exactly one
    /// well-formed bundle: wrong magic, unknown version, truncated, trailing bytes, sizes beyond the
    /// limits, a manifest that is not valid canonical JSON. Does not check the signature.
    /// </summary>
    public static Bundle Read(ReadOnlySpan<byte> input)
    {
        CheckLengths(input);
        return Parse(input.ToArray());
    }

    private static (int ManifestLength, int ModuleLength, long Total) CheckLengths(ReadOnlySpan<byte> input)
    {
        var (manifestLength, moduleLength, total) = ReadHeader(input);
        if (input.Length < total)
            throw Refused(BundleFailure.Truncated, $"the bundle is truncated: it is {input.Length} bytes but its " +
                $"header announces {total} (download it again)");
        if (input.Length > total)
            throw Refused(BundleFailure.TrailingData, $"{input.Length - total} unexpected bytes follow the signature " +
                $"block (the file is {input.Length} bytes, its header announces {total})");
        return (manifestLength, moduleLength, total);
    }

    /// <summary>Parses <paramref name="bytes"/>, which the bundle then holds: only for an array nobody else has (one
    /// this class just filled).</summary>
    private static Bundle Parse(byte[] bytes)
    {
        var (manifestLength, moduleLength, total) = CheckLengths(bytes);
        var block = bytes.AsSpan((int)(total - SignatureBlockLength));
        var algorithm = BinaryPrimitives.ReadUInt16LittleEndian(block);
        if (algorithm != EcdsaP256Sha256)
            throw Refused(BundleFailure.UnsupportedVersion, $"signature algorithm {algorithm} is not supported (this " +
                $"build knows 1: ECDSA P-256 SHA-256); upgrade kintsugi");
        var signatureLength = BinaryPrimitives.ReadUInt16LittleEndian(block[2..]);
        if (signatureLength != PublisherPublicKey.SignatureLength)
            throw Refused(BundleFailure.Malformed, $"the signature block claims a {signatureLength}-byte signature; " +
                $"ECDSA P-256 signatures are {PublisherPublicKey.SignatureLength}");
        var keyId = PublisherKeyId.FromBytes(block.Slice(4, PublisherKeyId.Length));

        var manifest = ManifestCodec.Parse(bytes.AsSpan(HeaderLength, manifestLength));
        if (manifest.PublisherKeyId != keyId)
            throw Refused(BundleFailure.Malformed,
                $"the signature block names key {keyId} but the manifest names key {manifest.PublisherKeyId}");
        return new Bundle(bytes, manifestLength, moduleLength, manifest, keyId);
    }

    /// <summary>
    /// Reads a bundle from a stream (to its end). Memory grows with the bytes actually read, never with
    /// the sizes the header claims.
    /// </summary>
    public static Bundle Read(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var header = new byte[HeaderLength];
        var got = stream.ReadAtLeast(header, HeaderLength, throwOnEndOfStream: false);
        var (_, _, total) = ReadHeader(header.AsSpan(0, got));
        if (stream.CanSeek && stream.Length - stream.Position < total - HeaderLength)
            throw Refused(BundleFailure.Truncated,
                $"the bundle is truncated: it is {HeaderLength + stream.Length - stream.Position} bytes but its " +
                $"header announces {total} (download it again)");

        // Grow by doubling from a small buffer, so a false size claim costs at most twice the real input; a file (a
        // seekable stream) of exactly the announced size is read into one array of that size.
        var exact = stream.CanSeek && stream.Length - stream.Position == total - HeaderLength;
        var buffer = new byte[exact ? total : (int)Math.Min(total, 64 * 1024)];
        header.CopyTo(buffer, 0);
        var length = HeaderLength;
        while (true)
        {
            if (length == buffer.Length)
            {
                if (length == total) break;
                Array.Resize(ref buffer, (int)Math.Min(total, (long)buffer.Length * 2));
            }
            var read = stream.Read(buffer, length, buffer.Length - length);
            if (read == 0) break;
            length += read;
        }
        if (length == total && stream.ReadByte() >= 0)
            throw Refused(BundleFailure.TrailingData,
                $"unexpected bytes follow the signature block (the header announces {total} bytes)");
        // The buffer is this method's own: a complete one is parsed in place, not copied.
        return length == buffer.Length ? Parse(buffer) : Read(buffer.AsSpan(0, length));
    }

    /// <summary>Reads a bundle file into one array of its size (no further copy).</summary>
    public static Bundle ReadFile(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return Read(stream);
        }
        catch (BundleException e)
        {
            throw new BundleException(e.Failure, $"{path}: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BundleException(BundleFailure.Unreadable, $"cannot read bundle {path}: {e.Message}", e);
        }
    }

    /// <summary>Validates the fixed header; returns the section lengths and the total file length it
    /// announces.</summary>
    private static (int ManifestLength, int ModuleLength, long Total) ReadHeader(ReadOnlySpan<byte> input)
    {
        var magicPrefix = Math.Min(input.Length, Magic.Length);
        if (!input[..magicPrefix].SequenceEqual(Magic[..magicPrefix]))
            throw Refused(BundleFailure.NotABundle,
                "this is not a Kintsugi bundle (it does not start with \"KINTSUGI\")");
        if (input.Length < HeaderLength)
            throw Refused(BundleFailure.Truncated, $"the bundle is truncated: {input.Length} bytes, shorter than its " +
                $"{HeaderLength}-byte header (download it again)");
        var version = BinaryPrimitives.ReadUInt16LittleEndian(input[8..]);
        if (version != CurrentFormatVersion)
            throw Refused(BundleFailure.UnsupportedVersion, $"bundle format version {version} is not supported (this " +
                $"build reads version {CurrentFormatVersion}); upgrade kintsugi");
        var flags = BinaryPrimitives.ReadUInt16LittleEndian(input[10..]);
        if (flags != 0) throw Refused(BundleFailure.Malformed, $"the header has unknown flags 0x{flags:x4}");
        var manifestLength = BinaryPrimitives.ReadUInt32LittleEndian(input[12..]);
        if (manifestLength is 0 or > MaxManifestLength)
            throw Refused(BundleFailure.Malformed,
                $"the header claims a {manifestLength}-byte manifest (allowed: 1 to {MaxManifestLength})");
        var moduleLength = BinaryPrimitives.ReadUInt64LittleEndian(input[16..]);
        if (moduleLength is 0 or > MaxModuleLength)
            throw Refused(BundleFailure.Malformed,
                $"the header claims a {moduleLength}-byte module (allowed: 1 to {MaxModuleLength})");
        var signatureLength = BinaryPrimitives.ReadUInt32LittleEndian(input[24..]);
        if (signatureLength != SignatureBlockLength)
            throw Refused(BundleFailure.Malformed,
                $"the header claims a {signatureLength}-byte signature block (version 1 has {SignatureBlockLength})");
        var reserved = BinaryPrimitives.ReadUInt32LittleEndian(input[28..]);
        if (reserved != 0) throw Refused(BundleFailure.Malformed, "the header's reserved field is not zero");
        return ((int)manifestLength, (int)moduleLength,
            HeaderLength + (long)manifestLength + (long)moduleLength + signatureLength);
    }

    private static BundleException Refused(BundleFailure failure, string message) => new(failure, message);

    public override string ToString() =>
        $"{(Manifest.Kind == BundleKind.User ? "user-space bundle" : "bundle")} level {Manifest.CumulativeLevel} for " +
        $"{(object?)Manifest.Object ?? Manifest.Target} signed by {KeyId}";
}
