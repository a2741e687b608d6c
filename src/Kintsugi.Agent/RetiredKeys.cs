using Kintsugi.Bundles;
using Kintsugi.Kernel;

namespace Kintsugi.Agent;

/// <summary>
/// The one policy for installed patches and key retirement: a patch whose publisher key is retired in the trust
/// store must not run, however long ago it was verified (the key may have been stolen before it was retired). The
/// agent uninstalls such patches at boot (never loading them) and at every check (unloading them), after giving the
/// source a chance to replace them with a good level.
/// </summary>
public static class RetiredKeys
{
    /// <summary>Why <paramref name="patch"/> must not run under <paramref name="trust"/>, or null when it
    /// may.</summary>
    public static string? Refusal(InstalledPatch patch, TrustStore trust) =>
        patch.Origin is { } origin && PublisherKeyId.TryParse(origin.PublisherKeyId, out var id)
        && trust.Find(id) is { State: KeyState.Retired }
            ? $"level {origin.Level} ({patch.Name}) is signed by publisher key {id}, which is retired in trust store " +
                $"{trust.Directory}"
            : null;

    /// <summary>
    /// The boot-time verdict for <see cref="BootApplier"/>, from the trust store as it is now. A trust store that
    /// cannot be read refuses nothing here (and is reported): the agent's next check fails on it loudly.
    /// </summary>
    public static Func<InstalledPatch, string?>? BootRefusal(string trustStore, Action<string> log)
    {
        try
        {
            var trust = TrustStore.Open(trustStore);
            return patch => Refusal(patch, trust);
        }
        catch (BundleException e)
        {
            log($"the trust store cannot be read ({e.Message}); installed patches are not checked for retired keys " +
                $"at this boot");
            return null;
        }
    }
}
