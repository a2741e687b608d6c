using Kintsugi.Bundles;
using Kintsugi.Kernel;

namespace Kintsugi.Agent;

/// <summary>A bundle the agent may apply: verified for this kernel, with its content address.</summary>
public sealed record VerifiedOffer(VerifiedBundle Bundle, Sha256Digest Digest, string Source)
{
    public int Level => Bundle.Manifest.CumulativeLevel;

    /// <summary>What the store records about where the patch came from (status and reports read it).</summary>
    public PatchOrigin Origin(string? moduleEffectiveVersion)
    {
        var m = Bundle.Manifest;
        return new PatchOrigin(Digest.ToString(), m.CumulativeLevel, m.PublisherKeyId.ToString(),
            m.Fixes.Select(f => f.Id).ToList(),
            m.Fixes.SelectMany(f => f.Cves).DistinctBy(c => c.Id).Select(c => new FixedCve(c.Id.ToString(),
            c.Severity.ToString().ToLowerInvariant(), c.Published.ToString("yyyy-MM-dd"))).ToList(),
            m.EffectivePackageVersion ?? moduleEffectiveVersion);
    }
}

/// <summary>A bundle that was refused, and why (the agent reports these; nothing from them is loaded).</summary>
public sealed record RefusedBundle(string Source, string Reason, int? Level);

/// <summary>What a directory of bundles offers this kernel.</summary>
/// <param name="Best">The highest level that verified for this exact kernel, or null.</param>
/// <param name="Refused">Bundles meant for this kernel (or unreadable) that were refused, at or above the best
/// level.</param>
/// <param name="Ignored">How many bundles target other kernel releases.</param>
public sealed record OfflineSelection(VerifiedOffer? Best, IReadOnlyList<RefusedBundle> Refused, int Ignored);

/// <summary>
/// Offline mode: picks, from a directory of bundles (any number of kernels), the highest cumulative level
/// that verifies for this exact kernel. A bundle for another release is ignored; one for this release but
/// another build, or badly signed, tampered or truncated, is refused and reported.
/// </summary>
public static class OfflineSource
{
    public const string Extension = ".bundle";

    /// <summary>Signed release metadata files an offline directory may carry (docs/bundle-format.md).</summary>
    public const string MetadataPattern = "*.metadata.json";

    /// <summary>Timestamps extending that metadata's freshness.</summary>
    public const string TimestampPattern = "*.timestamp.json";

    /// <param name="refuse">Why a verified level must not run (the release-metadata guard), or null: such a level is
    /// refused and the next one tried.</param>
    public static OfflineSelection
        Select(string directory, TrustStore trust, KernelTarget running, Func<int, string?>? refuse = null)
    {
        if (!Directory.Exists(directory))
            throw new AgentException($"the offline bundle directory {directory} does not exist; create it and copy " +
                $"bundles into it", ExitCode.NotFound);
        var refused = new List<RefusedBundle>();
        var candidates = new List<(Bundle Bundle, byte[] Bytes, string Path)>();
        var ignored = 0;
        foreach (var path in Directory.EnumerateFiles(directory, "*" + Extension).Order(StringComparer.Ordinal))
        {
            byte[] bytes;
            Bundle bundle;
            try
            {
                var length = new FileInfo(path).Length;
                if (length > Bundle.MaxLength)
                    throw new BundleException(BundleFailure.Malformed, $"{length} bytes, larger than any bundle");
                bytes = File.ReadAllBytes(path);
                bundle = Bundle.Read(bytes);
            }
            catch (Exception e) when (e is BundleException or IOException or UnauthorizedAccessException)
            {
                refused.Add(new RefusedBundle(path, e.Message, null));
                continue;
            }
            // User-space bundles (no kernel target) are the user-space pass's, not this one's.
            if (bundle.Manifest.Target?.Release != running.Release) { ignored++; continue; }
            candidates.Add((bundle, bytes, path));
        }

        VerifiedOffer? best = null;
        foreach (var (bundle, bytes, path) in candidates.OrderByDescending(c => c.Bundle.Manifest.CumulativeLevel)
            .ThenBy(c => c.Path, StringComparer.Ordinal))
        {
            if (best is not null && bundle.Manifest.CumulativeLevel < best.Level) break;
            if (best is null && refuse?.Invoke(bundle.Manifest.CumulativeLevel) is { } forbidden)
            {
                // Refused before verification too: a forbidden level never gets as far as a signature check.
                refused.Add(new RefusedBundle(path, forbidden, bundle.Manifest.CumulativeLevel));
                continue;
            }
            try
            {
                var verified = BundleVerifier.Verify(bundle, trust, running);
                if (refuse?.Invoke(verified.Manifest.CumulativeLevel) is { } why)
                    throw new BundleException(BundleFailure.InvalidMetadata, why);
                if (best is null) best = new VerifiedOffer(verified, Sha256Digest.Of(bytes), path);
            }
            catch (BundleException e)
            {
                refused.Add(new RefusedBundle(path, e.Message, bundle.Manifest.CumulativeLevel));
            }
        }
        return new OfflineSelection(best, refused, ignored);
    }

    /// <summary>
    /// The signed release metadata and timestamps in <paramref name="directory"/> for <paramref name="build"/>, in
    /// ascending version (the guard keeps the newest it verifies). Unreadable files are skipped here; the guard reports
    /// what it refuses.
    /// </summary>
    public static (IReadOnlyList<string> Metadata, IReadOnlyList<string> Timestamps) Statements(string directory,
        BuildId build)
    {
        var metadata = new List<(long Version, string Text)>();
        foreach (var path in Directory.EnumerateFiles(directory, MetadataPattern).Order(StringComparer.Ordinal))
        {
            try
            {
                var text = File.ReadAllText(path);
                var parsed = SignedReleaseMetadata.Read(text);
                if (parsed.Metadata.BuildId == build) metadata.Add((parsed.Metadata.Version, text));
            }
            catch (Exception e) when (e is BundleException or IOException or UnauthorizedAccessException) { }
        }
        var timestamps = new List<string>();
        foreach (var path in Directory.EnumerateFiles(directory, TimestampPattern).Order(StringComparer.Ordinal))
        {
            try
            {
                var text = File.ReadAllText(path);
                if (SignedReleaseTimestamp.Read(text).Timestamp.BuildId == build) timestamps.Add(text);
            }
            catch (Exception e) when (e is BundleException or IOException or UnauthorizedAccessException) { }
        }
        return ([.. metadata.OrderBy(m => m.Version).Select(m => m.Text)], timestamps);
    }
}
