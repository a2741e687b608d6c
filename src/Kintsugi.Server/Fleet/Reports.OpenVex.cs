using Dapper;

namespace Kintsugi.Server.Fleet;

public sealed partial class Reports
{
    private sealed class PackageRow
    {
        public string Id { get; set; } = "";
        public string? PackageVersion { get; set; }
    }

    /// <summary>
    /// The fleet as an OpenVEX document, for scanners that take VEX from a central place: for each CVE a
    /// released level fixes, a <c>fixed</c> statement on the machines that run such a level (as each last
    /// reported), and an <c>affected</c> one, with what to do, on the machines whose kernel build has the fix
    /// but do not run it. A machine is a product of its own (<c>urn:kintsugi:machine:ID</c>) identified by
    /// its kernel package's purl: two machines with the same package can differ.
    /// </summary>
    public async Task<OpenVexDocument> OpenVexAsync(string author)
    {
        var s = await LoadAsync();
        Dictionary<string, string?> packages;
        await using (var c = await db.OpenAsync())
            packages = (await c.QueryAsync<PackageRow>("SELECT id, package_version FROM machines"))
                .ToDictionary(r => r.Id, r => r.PackageVersion);
        var (cvesAt, info) = Index(s);
        var firstFix = FirstFixes(s, cvesAt);
        var statements = new List<OpenVexStatement>();
        foreach (var (cve, row) in info.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var fixedOn = new List<OpenVexProduct>();
            var exposed = new List<OpenVexProduct>();
            var fixLevels = new SortedSet<int>();
            foreach (var m in s.Machines)
            {
                if (!firstFix.TryGetValue((m.BuildId, cve), out var fix)) continue;
                var product = new OpenVexProduct($"urn:kintsugi:machine:{m.Id}",
                    new Dictionary<string, string>
                    {
                        ["purl"] = OpenVexDocument.DebianKernelPackage(m.KernelRelease,
                        packages.GetValueOrDefault(m.Id))
                    });
                if (Fixed(new Patchable(m.BuildId, m.State, m.Level, null), cve, cvesAt)) fixedOn.Add(product);
                else { exposed.Add(product); fixLevels.Add((int)fix.Level); }
            }
            if (fixedOn.Count > 0)
                statements.Add(new OpenVexStatement(new OpenVexVulnerability(cve), fixedOn, "fixed",
                    $"live patched by Kintsugi ({row.Severity}); {fixedOn.Count} machine(s) run a level that fixes " +
                    $"it"));
            if (exposed.Count > 0)
                statements.Add(new OpenVexStatement(new OpenVexVulnerability(cve), exposed, "affected",
                    $"a Kintsugi livepatch fixes it ({row.Severity}) but these machines do not run it",
                    $"apply Kintsugi level {string.Join(" or ", fixLevels)} or above for the machine's kernel build " +
                        $"(promote it to the machine's channel; kintsugi agent check shows what a machine runs)"));
        }
        return OpenVexDocument.Create(author, $"kintsugi-server {ServerApp.Version}", statements,
            DateTimeOffset.UtcNow);
    }
}
