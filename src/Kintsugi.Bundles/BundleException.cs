namespace Kintsugi.Bundles;

/// <summary>Why a bundle, key file or trust store was refused.</summary>
public enum BundleFailure
{
    /// <summary>The input does not start with the bundle magic.</summary>
    NotABundle,
    /// <summary>The envelope's format version (or signature algorithm) is one this build does not read.</summary>
    UnsupportedVersion,
    /// <summary>The bundle file could not be read at all (missing, no permission, I/O error).</summary>
    Unreadable,
    /// <summary>The input ends before the structure its header announces.</summary>
    Truncated,
    /// <summary>Bytes follow the signature block.</summary>
    TrailingData,
    /// <summary>A header field or the signature block is malformed, or a claimed size exceeds the format's
    /// limits.</summary>
    Malformed,
    /// <summary>The manifest is not valid, canonical JSON, or a field is out of range.</summary>
    InvalidManifest,
    /// <summary>The signing key is not in the trust store.</summary>
    UnknownKey,
    /// <summary>The signing key is in the trust store but retired.</summary>
    RetiredKey,
    /// <summary>The signature does not match the header and manifest.</summary>
    BadSignature,
    /// <summary>The module bytes do not match the size and SHA-256 the signed manifest names.</summary>
    ModuleMismatch,
    /// <summary>The bundle targets another kernel build than the one expected.</summary>
    WrongTarget,
    /// <summary>A key file is not a P-256 key in the expected PEM form.</summary>
    KeyFile,
    /// <summary>The trust store directory is inconsistent or cannot be written.</summary>
    TrustStore,
    /// <summary>Release metadata or a timestamp is not a valid, canonical signed document.</summary>
    InvalidMetadata,
}

/// <summary>
/// A bundle, publisher key or trust store was refused. The message says what is wrong and what to do;
/// <see cref="Failure"/> says which check failed. Always <see cref="ExitCode.InputRefused"/>.
/// </summary>
public sealed class
    BundleException(BundleFailure failure, string message, Exception? inner = null) : KintsugiException(message, inner)
{
    public BundleFailure Failure { get; } = failure;

    public override ExitCode ExitCode => ExitCode.InputRefused;
}
