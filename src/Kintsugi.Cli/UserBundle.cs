using Kintsugi.Bundles;
using Kintsugi.User;

namespace Kintsugi.Cli;

/// <summary>
/// <c>kintsugi bundle sign</c> for a user-space patch (the JSON <c>kintsugi user build</c> writes): the bundle's target
/// is the patch's object and build-id, its module the patch file exactly as built.
/// </summary>
internal static class UserBundle
{
    public static bool IsUserPatch(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            Span<byte> start = stackalloc byte[256];
            var read = stream.ReadAtLeast(start, start.Length, throwOnEndOfStream: false);
            return System.Text.Encoding.UTF8.GetString(start[..read])
                .Contains($"\"{UserPatch.CurrentFormat}\"", StringComparison.Ordinal);
        }
        catch (IOException) { return false; }
    }

    public static Task<int> Sign(string patchPath, string keyPath, DescriptionFile stated, int? level,
        string? packageVersion, string? output)
    {
        var bytes = File.ReadAllBytes(patchPath);
        var patch = UserPatch.Parse(bytes, patchPath);
        using var signingKey = PublisherKey.Load(keyPath);
        var cumulativeLevel = level ?? stated.Level
            ?? throw new BundleException(BundleFailure.InvalidManifest,
            "no cumulative level: give \"level\" in the description or --level");
        var target = new ObjectTarget(patch.Target.Object, patch.Target.BuildId, stated.Package, packageVersion);
        var functions = stated.PatchedFunctions.Count > 0 ? stated.PatchedFunctions
            : [.. patch.Functions.Select(f => new PatchedFunction(patch.Target.Object, f.Name))];
        var bundle = Bundle.Create(bytes, new BundleDescription
        {
            Object = target,
            CumulativeLevel = cumulativeLevel,
            Fixes = stated.Fixes,
            PatchedFunctions = functions,
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = Cli.Version,
            EffectivePackageVersion = stated.EffectivePackageVersion,
        }, signingKey);
        var outputPath = output ?? Path.ChangeExtension(patchPath, ".bundle");
        bundle.Save(outputPath);
        Console.WriteLine($"{outputPath}: user-space level {cumulativeLevel} for {target}, {stated.Fixes.Count} " +
            $"fix(es), signed by {signingKey.Id}");
        Console.WriteLine($"sha256 {Sha256Digest.Of(bundle.ToArray())}");
        return Task.FromResult(0);
    }
}
