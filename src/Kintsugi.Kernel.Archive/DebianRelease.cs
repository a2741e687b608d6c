using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.Archive;

/// <summary>
/// A Debian release that still gets kernel fixes: its suites (the release, its point-release updates and
/// its security suite) and the compiler package its kernels are built with.
/// </summary>
public sealed partial record DebianRelease(int Number, string Codename, string CompilerPackage)
{
    public static readonly DebianRelease Bullseye = new(11, "bullseye", "gcc-10");
    public static readonly DebianRelease Bookworm = new(12, "bookworm", "gcc-12");
    public static readonly DebianRelease Trixie = new(13, "trixie", "gcc-14");

    /// <summary>Oldest first.</summary>
    public static IReadOnlyList<DebianRelease> All { get; } = [Bullseye, Bookworm, Trixie];

    public const string Mirror = "http://deb.debian.org/debian";
    public const string SecurityMirror = "http://deb.debian.org/debian-security";
    public const string Keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";

    public IReadOnlyList<string> Suites => [Codename, $"{Codename}-updates", $"{Codename}-security"];

    /// <summary>The one-line-style apt sources of this release (main only: kernels and toolchains are there).</summary>
    public IReadOnlyList<string> SourcesLines =>
    [
        $"deb [signed-by={Keyring}] {Mirror} {Codename} main",
        $"deb [signed-by={Keyring}] {Mirror} {Codename}-updates main",
        $"deb [signed-by={Keyring}] {SecurityMirror} {Codename}-security main",
    ];

    /// <summary>"11", "debian11", "bullseye" (any case).</summary>
    public static DebianRelease Parse(string text)
    {
        var key = text.Trim().ToLowerInvariant();
        if (key.StartsWith("debian", StringComparison.Ordinal)) key = key["debian".Length..].TrimStart('-', ' ');
        return All.FirstOrDefault(r => r.Codename == key || r.Number.ToString() == key)
            ?? throw new KernelArchiveException(
            $"'{text}' is not a Debian release this archive provider knows; known: " +
                string.Join(", ", All.Select(r => $"{r.Number} ({r.Codename})")), ExitCode.Usage);
    }

    /// <summary>
    /// The release whose archive ships a kernel, read from Debian's ABI naming: 5.10.0-N is Debian 11,
    /// 6.1.0-0.deb11.N Debian 11's backport, 6.1.0-N Debian 12, VERSION+debNN Debian NN. Null for names
    /// outside these rules, which are then looked up in every release's archive.
    /// </summary>
    public static DebianRelease? Of(KernelRelease kernel)
    {
        var match = DebSuffix().Match(kernel.Value);
        if (match.Success) return All.FirstOrDefault(r => r.Number == int.Parse(match.Groups["n"].Value));
        var upstream = kernel.UpstreamVersion;
        return (upstream.Major, upstream.Minor) switch
        {
            (5, 10) => Bullseye,
            (6, 1) => Bookworm,
            _ => null,
        };
    }

    public override string ToString() => $"Debian {Number} ({Codename})";

    [GeneratedRegex(@"[.+]deb(?<n>\d+)(?:[.u-]|$)")]
    private static partial Regex DebSuffix();
}
