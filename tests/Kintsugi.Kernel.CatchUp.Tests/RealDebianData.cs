using Kintsugi.Kernel.Archive;

namespace Kintsugi.Kernel.CatchUp.Tests;

/// <summary>
/// Real Debian data, fetched once per machine into the shared cache: linux-source-6.1 6.1.176-1 (the source
/// of the 6.1.0-50 cloud kernel) and 6.1.187-1, the changelog of the newer one, and their split difference.
/// </summary>
public static class RealDebianData
{
    public static readonly LinuxSourceVersion From = new("linux-source-6.1", "6.1.176-1");
    public static readonly LinuxSourceVersion To = new("linux-source-6.1", "6.1.187-1");
    public static readonly KernelRelease Kernel = KernelRelease.Parse("6.1.0-50-cloud-amd64");

    private static readonly Lazy<Task<FetchedLinuxSource>> FromSource = new(() => Archive.FetchAsync(From));
    private static readonly Lazy<Task<FetchedLinuxSource>> ToSource = new(() => Archive.FetchAsync(To));
    private static readonly Lazy<Task<SourceDifference>> Split = new(async () =>
        await SourceDifference.ComputeAsync(await FromSource.Value, await ToSource.Value,
            DebianKernelArchive.DefaultCacheRoot, _ => { }));

    private static LinuxSourceArchive Archive => new(DebianKernelArchive.DefaultCacheRoot);

    public static async Task<DebianChangelog> ChangelogAsync() =>
        DebianChangelog.Read((await ToSource.Value).Changelog);

    public static Task<SourceDifference> DifferenceAsync() => Split.Value;
}
