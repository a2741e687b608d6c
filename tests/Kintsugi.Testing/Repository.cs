using Kintsugi.Lab;

namespace Kintsugi.Testing;

/// <summary>Paths in this checkout and the published guest binary the lab puts into every guest.</summary>
public static class Repository
{
    public static string Root { get; } = FindRoot();

    public static string FixtureModules => Path.Combine(Root, "tests", "fixtures", "modules");

    /// <summary>
    /// kpatch's integration patches, kept in the team's shared/ folder beside the checkout (as CI lays it out),
    /// not in this repository: they are another project's text.
    /// </summary>
    public static string KpatchCorpus
    {
        get
        {
            var corpus = Path.GetFullPath(Path.Combine(Root, "..", "shared", "corpus", "kpatch-linux-6.2.0"));
            return Directory.Exists(corpus) ? corpus
                : throw new InvalidOperationException($"the kpatch corpus is missing: expected {corpus} (shared/ " +
                $"beside the checkout)");
        }
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Kintsugi.slnx"))) return dir.FullName;
        throw new InvalidOperationException("cannot find the repository root (Kintsugi.slnx) above "
            + AppContext.BaseDirectory);
    }

    private static readonly Lazy<string> Guest = new(() =>
    {
        if (Environment.GetEnvironmentVariable(GuestBinary.EnvironmentVariable) is { Length: > 0 } configured)
            return configured;
        // The launcher publishes the single-file binary when it is missing or stale.
        var result = ExternalCommand.Run(Path.Combine(Root, "kintsugi"), "version");
        if (!result.Succeeded)
            throw new InvalidOperationException("publishing the kintsugi binary failed:\n" + result.StandardError);
        return Path.Combine(Root, "artifacts", "bin", "kintsugi");
    });

    /// <summary>The real, self-contained kintsugi binary (the same file runs on the host and in guests).</summary>
    public static string KintsugiBinary => Guest.Value;
}
