namespace Kintsugi.Kernel.Archive;

/// <summary>One kernel ABI a Debian release's archive offers, and whether the builder has what it needs for
/// it.</summary>
/// <param name="Suite">Where the image comes from (the release itself, -updates or -security).</param>
/// <param name="Buildable">Headers and linux-source of exactly this version are in the archive: livepatches can be
/// built for it.</param>
public sealed record AvailableKernel(
    int Debian,
    string Codename,
    KernelRelease Release,
    string PackageVersion,
    string Suite,
    bool Headers,
    bool Source,
    bool Buildable);

/// <summary>What the archives of the known Debian releases offer, read from their private apt lists.</summary>
public sealed class KernelCatalog(DebianKernelArchive archive, Action<string>? progress = null)
{
    private readonly Action<string> _progress = progress ?? (_ => { });

    /// <summary>The kernels of <paramref name="flavour"/> (for example cloud-amd64) per release, newest ABI
    /// last.</summary>
    public async Task<IReadOnlyList<AvailableKernel>> ListAsync(IReadOnlyList<DebianRelease> releases, string flavour,
        bool refresh, CancellationToken cancellation = default)
    {
        if (!System.Text.RegularExpressions.Regex.IsMatch(flavour, "^[a-z0-9][a-z0-9-]*$"))
            throw new KernelArchiveException(
                $"'{flavour}' is not a kernel flavour (for example cloud-amd64, amd64, rt-amd64)", ExitCode.Usage);
        var found = new List<AvailableKernel>();
        foreach (var release in releases)
        {
            var apt = archive.AptFor(release);
            await apt.EnsureListsAsync(refresh ? TimeSpan.Zero : ReleaseApt.MaxListAge, _progress, cancellation);
            var images =
                (await apt.SearchNamesAsync($"^linux-image-[0-9]+\\.[0-9]+\\.[0-9]+.*-{flavour}$", cancellation))
                .Select(n => n["linux-image-".Length..]).Where(r => KernelRelease.TryParse(r, out _)).ToList();
            var imageVersions = await apt.VersionsAsync([.. images.Select(r => $"linux-image-{r}")], cancellation);
            var headerVersions = (await apt.VersionsAsync([.. images.Select(r => $"linux-headers-{r}")], cancellation))
                .Select(v => (v.Package, v.Version)).ToHashSet();
            var sourcePackages = images.Select(r => SourcePackage(KernelRelease.Parse(r))).Distinct().ToList();
            var sourceVersions =
                (await apt.VersionsAsync(sourcePackages, cancellation)).Select(v => (v.Package, v.Version)).ToHashSet();
            foreach (var group in imageVersions.GroupBy(v => (v.Package, v.Version)))
            {
                var kernel = KernelRelease.Parse(group.Key.Package["linux-image-".Length..]);
                var headers = headerVersions.Contains(($"linux-headers-{kernel}", group.Key.Version));
                var source = sourceVersions.Contains((SourcePackage(kernel), group.Key.Version));
                // The oldest suite that has it: a kernel of the release itself is listed as such, not as its security
                // copy.
                var suite = group.Select(v => v.Suite)
                    .OrderBy(s => release.Suites.ToList().IndexOf(s) is var i && i < 0 ? int.MaxValue : i).First();
                found.Add(new AvailableKernel(release.Number, release.Codename, kernel, group.Key.Version, suite,
                    headers, source, headers && source));
            }
        }
        return [.. found.OrderBy(k => k.Debian).ThenBy(k => k.Release.UpstreamVersion)
            .ThenBy(k => k.PackageVersion, DebianVersionComparer.Instance)];
    }

    public static string SourcePackage(KernelRelease kernel) =>
        $"linux-source-{kernel.UpstreamVersion.Major}.{kernel.UpstreamVersion.Minor}";
}

/// <summary>Orders Debian package versions as dpkg does (epoch, upstream, revision; '~' sorts before
/// everything).</summary>
public sealed class DebianVersionComparer : IComparer<string>
{
    public static readonly DebianVersionComparer Instance = new();

    public int Compare(string? x, string? y)
    {
        if (x == y) return 0;
        if (x is null) return -1;
        if (y is null) return 1;
        var (ex, ux, rx) = Split(x);
        var (ey, uy, ry) = Split(y);
        if (ex != ey) return ex.CompareTo(ey);
        var upstream = ComparePart(ux, uy);
        return upstream != 0 ? upstream : ComparePart(rx, ry);
    }

    private static (int Epoch, string Upstream, string Revision) Split(string version)
    {
        var colon = version.IndexOf(':');
        var epoch = colon > 0 && int.TryParse(version[..colon], out var e) ? e : 0;
        var rest = colon > 0 ? version[(colon + 1)..] : version;
        var dash = rest.LastIndexOf('-');
        return dash > 0 ? (epoch, rest[..dash], rest[(dash + 1)..]) : (epoch, rest, "");
    }

    private static int Order(char c) => c == '~' ? -1 : char.IsAsciiLetter(c) ? c : c + 256;

    private static int ComparePart(string a, string b)
    {
        int i = 0, j = 0;
        while (i < a.Length || j < b.Length)
        {
            while ((i < a.Length && !char.IsAsciiDigit(a[i])) || (j < b.Length && !char.IsAsciiDigit(b[j])))
            {
                var ca = i < a.Length && !char.IsAsciiDigit(a[i]) ? Order(a[i]) : 0;
                var cb = j < b.Length && !char.IsAsciiDigit(b[j]) ? Order(b[j]) : 0;
                if (ca != cb) return ca.CompareTo(cb);
                if (i < a.Length && !char.IsAsciiDigit(a[i])) i++;
                if (j < b.Length && !char.IsAsciiDigit(b[j])) j++;
            }
            long na = 0, nb = 0;
            while (i < a.Length && char.IsAsciiDigit(a[i])) na = na * 10 + (a[i++] - '0');
            while (j < b.Length && char.IsAsciiDigit(b[j])) nb = nb * 10 + (b[j++] - '0');
            if (na != nb) return na.CompareTo(nb);
        }
        return 0;
    }
}
