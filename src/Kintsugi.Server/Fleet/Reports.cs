using Dapper;
using Kintsugi.Server.Storage;

namespace Kintsugi.Server.Fleet;

/// <summary>
/// Fleet status, per-CVE exposure and the PCI DSS 6.3.3 report. Exposure is known for machines whose exact
/// kernel build has a release fixing the CVE: such a machine is exposed until it reports <c>applied</c> at
/// a level whose manifest lists the CVE. (A kernel with no release for a CVE is not judged: the server does
/// not know whether that build is affected.) User-space CVEs count the same way, per object: a machine whose
/// processes map an object (by build-id) with a release fixing the CVE is exposed until its agent reports that
/// object <c>applied</c> (every process mapping it patched) at a level listing the CVE.
/// </summary>
public sealed partial class Reports(Database db, ServerOptions options, Epoch epoch)
{
    public const int PciWindowDays = 30;

    private sealed class MachineRow
    {
        public string Id { get; set; } = "";
        public string Hostname { get; set; } = "";
        public string Channel { get; set; } = "";
        public string KernelRelease { get; set; } = "";
        public string BuildId { get; set; } = "";
        public string? State { get; set; }
        public long? Level { get; set; }
        public long? LastCheckinAt { get; set; }
    }

    private sealed class ReleaseRow
    {
        public string Id { get; set; } = "";
        public string KernelRelease { get; set; } = "";
        public string BuildId { get; set; } = "";
        public long Level { get; set; }
        public long PublishedAt { get; set; }
        public long? RevokedAt { get; set; }
    }

    private sealed class CveRow
    {
        public string ReleaseId { get; set; } = "";
        public string Cve { get; set; } = "";
        public string Severity { get; set; } = "";
        public string Published { get; set; } = "";
    }

    private sealed class LevelRow
    {
        public string Machine { get; set; } = "";
        public string BuildId { get; set; } = "";
        public long Level { get; set; }
        public long FirstAppliedAt { get; set; }
    }

    private sealed class ObjectRow
    {
        public string Machine { get; set; } = "";
        public string BuildId { get; set; } = "";
        public string Object { get; set; } = "";
        public string State { get; set; } = "";
        public long? Level { get; set; }
    }

    private sealed record Snapshot(List<MachineRow> Machines, List<ReleaseRow> Releases, List<CveRow> Cves,
        List<LevelRow> Levels, List<ObjectRow> Objects);

    /// <summary>
    /// What a machine runs that releases can fix: its kernel build, and each user-space object it maps (Object names
    /// it), each with the state and level its agent reports.
    /// </summary>
    private sealed record Patchable(string BuildId, string? State, long? Level, string? Object);

    private static IEnumerable<Patchable> PatchablesOf(MachineRow m, ILookup<string, ObjectRow> objects) =>
        [new Patchable(m.BuildId, m.State, m.Level, null),
        .. objects[m.Id].Select(o => new Patchable(o.BuildId, o.State, o.Level, o.Object))];

    private async Task<Snapshot> LoadAsync()
    {
        await using var c = await db.OpenAsync();
        return new Snapshot(
            [.. await c.QueryAsync<MachineRow>("SELECT id, hostname, channel, kernel_release, build_id, state, " +
                "level, last_checkin_at FROM machines ORDER BY hostname, id")],
            [.. await c.QueryAsync<ReleaseRow>("SELECT id, kernel_release, build_id, level, published_at, revoked_at " +
                "FROM releases ORDER BY build_id, level")],
            [.. await c.QueryAsync<CveRow>("SELECT release_id, cve, severity, published FROM release_cves ORDER BY " +
                "cve")],
            [.. await c.QueryAsync<LevelRow>("SELECT machine, build_id, level, first_applied_at FROM machine_levels")],
            [.. await c.QueryAsync<ObjectRow>("SELECT machine, build_id, object, state, level FROM machine_objects " +
            "ORDER BY object, build_id")]);
    }

    public async Task<FleetReport> FleetAsync()
    {
        var s = await LoadAsync();
        var now = DateTimeOffset.UtcNow;
        var staleAfter = TimeSpan.FromSeconds(options.CheckInSeconds * options.StaleAfterIntervals);
        var best = s.Releases.Where(r => r.RevokedAt is null).GroupBy(r => r.BuildId)
            .ToDictionary(g => g.Key, g => (int)g.Max(r => r.Level));
        return new FleetReport(now, s.Machines.Count,
            s.Machines.Count(m => m.LastCheckinAt is null || now - Releases.Time(m.LastCheckinAt.Value) > staleAfter),
            [.. s.Machines.GroupBy(m => m.State ?? "never-checked-in").OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => new CountBy(g.Key, g.Count()))],
            [.. s.Machines.GroupBy(m => m.Channel).OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => new CountBy(g.Key, g.Count()))],
            [.. s.Machines.GroupBy(m => (m.KernelRelease, m.BuildId))
                .OrderBy(g => g.Key.KernelRelease, StringComparer.Ordinal)
                .Select(g =>
                    new KernelSummary(g.Key.KernelRelease, g.Key.BuildId, g.Count(), g.Count(m => m.State == "applied"),
                    best.TryGetValue(g.Key.BuildId, out var l) ? l : null))],
            s.Releases.Count, s.Releases.Count(r => r.RevokedAt is not null), epoch.Current);
    }

    /// <summary>Per build: for each CVE its releases, and the CVEs each level contains.</summary>
    private static (Dictionary<(string Build, int Level), HashSet<string>> CvesAt,
        Dictionary<string, CveRow> CveInfo) Index(Snapshot s)
    {
        var releaseById = s.Releases.ToDictionary(r => r.Id);
        var cvesAt = new Dictionary<(string, int), HashSet<string>>();
        var info = new Dictionary<string, CveRow>(StringComparer.Ordinal);
        foreach (var cve in s.Cves)
        {
            var r = releaseById[cve.ReleaseId];
            var key = (r.BuildId, (int)r.Level);
            if (!cvesAt.TryGetValue(key, out var set)) cvesAt[key] = set = new HashSet<string>(StringComparer.Ordinal);
            set.Add(cve.Cve);
            info.TryAdd(cve.Cve, cve);
        }
        return (cvesAt, info);
    }

    /// <summary>The first good (not revoked) release of a build that fixes a CVE.</summary>
    private static Dictionary<(string Build, string Cve), ReleaseRow> FirstFixes(Snapshot s,
        Dictionary<(string Build, int Level), HashSet<string>> cvesAt)
    {
        var first = new Dictionary<(string, string), ReleaseRow>();
        foreach (var r in s.Releases.Where(r => r.RevokedAt is null).OrderBy(r => r.Level))
            if (cvesAt.TryGetValue((r.BuildId, (int)r.Level), out var cves))
                foreach (var cve in cves) first.TryAdd((r.BuildId, cve), r);
        return first;
    }

    private static bool Fixed(Patchable p, string cve,
        Dictionary<(string Build, int Level), HashSet<string>> cvesAt) =>
        p.State == "applied" && p.Level is { } level && cvesAt.TryGetValue((p.BuildId, (int)level), out var set)
            && set.Contains(cve);

    public async Task<ExposureReport> ExposureAsync(string? onlyCve = null)
    {
        var s = await LoadAsync();
        var (cvesAt, info) = Index(s);
        var firstFix = FirstFixes(s, cvesAt);
        var objects = s.Objects.ToLookup(o => o.Machine);
        var result = new List<CveExposure>();
        foreach (var (cve, row) in info.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (onlyCve is not null && cve != onlyCve) continue;
            var exposed = new List<ExposedMachine>();
            var fixedCount = 0;
            foreach (var (m, p) in s.Machines.SelectMany(m => PatchablesOf(m, objects).Select(p => (m, p))))
            {
                if (!firstFix.TryGetValue((p.BuildId, cve), out var fix)) continue;
                if (Fixed(p, cve, cvesAt)) { fixedCount++; continue; }
                exposed.Add(new ExposedMachine(m.Id, m.Hostname, m.Channel, m.KernelRelease, p.BuildId, p.State,
                    (int?)p.Level, (int)fix.Level,
                    Releases.Time(fix.PublishedAt),
                        DateOnly.Parse(row.Published, System.Globalization.CultureInfo.InvariantCulture),
                    m.LastCheckinAt is null ? null : Releases.Time(m.LastCheckinAt.Value), p.Object));
            }
            result.Add(new CveExposure(cve, row.Severity,
                DateOnly.Parse(row.Published, System.Globalization.CultureInfo.InvariantCulture), exposed.Count,
                fixedCount, exposed));
        }
        return new ExposureReport(DateTimeOffset.UtcNow, result);
    }

    public static readonly string[] Severities = ["none", "low", "medium", "high", "critical"];

    public async Task<ComplianceReport> ComplianceAsync(string minimumSeverity, DateTimeOffset? asOf = null)
    {
        var minimum = Array.IndexOf(Severities, minimumSeverity);
        if (minimum < 0) throw FleetException.Invalid($"severity '{minimumSeverity}' is not one of " +
            $"{string.Join(", ", Severities)}");
        var now = asOf ?? DateTimeOffset.UtcNow;
        var s = await LoadAsync();
        var (cvesAt, info) = Index(s);
        var firstFix = FirstFixes(s, cvesAt);
        var levels = s.Levels.GroupBy(l => l.Machine).ToDictionary(g => g.Key, g => g.ToList());
        var objects = s.Objects.ToLookup(o => o.Machine);
        var rows = new List<ComplianceRow>();
        foreach (var (m, p) in s.Machines.SelectMany(m => PatchablesOf(m, objects).Select(p => (m, p))))
        {
            foreach (var (cve, row) in info.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                if (Array.IndexOf(Severities, row.Severity) < minimum
                    || !firstFix.TryGetValue((p.BuildId, cve), out var fix)) continue;
                var released = Releases.Time(fix.PublishedAt);
                var deadline = released.AddDays(PciWindowDays);
                DateTimeOffset? applied = levels.GetValueOrDefault(m.Id, [])
                    .Where(l => l.BuildId == p.BuildId && cvesAt.TryGetValue((l.BuildId, (int)l.Level), out var set)
                        && set.Contains(cve))
                    .Select(l => (DateTimeOffset?)Releases.Time(l.FirstAppliedAt)).Min();
                var currentlyFixed = Fixed(p, cve, cvesAt);
                string status; bool breach;
                if (applied is { } at && at <= deadline) (status, breach) = ("compliant", false);
                else if (applied is not null) (status, breach) = ("late", true);
                else if (now <= deadline) (status, breach) = ("open", false);
                else (status, breach) = ("overdue", true);
                rows.Add(new ComplianceRow(m.Id, m.Hostname, m.Channel, m.KernelRelease, p.BuildId, cve, row.Severity,
                    released, deadline, applied, currentlyFixed,
                    applied is null ? null : Math.Round((applied.Value - released).TotalDays, 2), status, breach,
                    p.Object));
            }
        }
        return new ComplianceReport(now, PciWindowDays, minimumSeverity, rows.Count, rows.Count(r => r.Breach), rows);
    }
}
