namespace Kintsugi;

/// <summary>
/// One kernel build, exactly: the release <c>uname -r</c> prints, the distribution package version it
/// came from (when known) and the GNU build-id of its vmlinux, which no other build shares.
/// </summary>
public sealed record KernelTarget(KernelRelease Release, string? PackageVersion, BuildId BuildId)
{
    public override string ToString() =>
        PackageVersion is null ? $"{Release} (build-id {BuildId})" : $"{Release} {PackageVersion} (build-id {BuildId})";
}
