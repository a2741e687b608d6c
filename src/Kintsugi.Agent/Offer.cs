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
            m.Fixes.SelectMany(f => f.Cves).DistinctBy(c => c.Id).Select(c => new FixedCve(c.Id.ToString(), c.Severity.ToString().ToLowerInvariant(), c.Published.ToString("yyyy-MM-dd"))).ToList(),
            m.EffectivePackageVersion ?? moduleEffectiveVersion);
    }
}

/// <summary>A bundle that was refused, and why (the agent reports these; nothing from them is loaded).</summary>
public sealed record RefusedBundle(string Source, string Reason, int? Level);

/// <summary>What a directory of bundles offers this kernel.</summary>
/// <param name="Best">The highest level that verified for this exact kernel, or null.</param>
/// <param name="Refused">Bundles meant for this kernel (or unreadable) that were refused, at or above the best level.</param>
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

    public static OfflineSelection Select(string directory, TrustStore trust, KernelTarget running)
    {
        if (!Directory.Exists(directory))
            throw new AgentException($"the offline bundle directory {directory} does not exist; create it and copy bundles into it", ExitCode.NotFound);
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
                if (length > Bundle.MaxLength) throw new BundleException(BundleFailure.Malformed, $"{length} bytes, larger than any bundle");
                bytes = File.ReadAllBytes(path);
                bundle = Bundle.Read(bytes);
            }
            catch (Exception e) when (e is BundleException or IOException or UnauthorizedAccessException)
            {
                refused.Add(new RefusedBundle(path, e.Message, null));
                continue;
            }
            if (bundle.Manifest.Target.Release != running.Release) { ignored++; continue; }
            candidates.Add((bundle, bytes, path));
        }

        VerifiedOffer? best = null;
        foreach (var (bundle, bytes, path) in candidates.OrderByDescending(c => c.Bundle.Manifest.CumulativeLevel).ThenBy(c => c.Path, StringComparer.Ordinal))
        {
            if (best is not null && bundle.Manifest.CumulativeLevel < best.Level) break;
            try
            {
                var verified = BundleVerifier.Verify(bundle, trust, running);
                if (best is null) best = new VerifiedOffer(verified, Sha256Digest.Of(bytes), path);
            }
            catch (BundleException e)
            {
                refused.Add(new RefusedBundle(path, e.Message, bundle.Manifest.CumulativeLevel));
            }
        }
        return new OfflineSelection(best, refused, ignored);
    }
}
