namespace Kintsugi.Agent;

/// <summary>
/// The user-space patches running on this machine in the formats scanners and monitoring read, next to the kernel's
/// (<see cref="Kintsugi.Kernel.StatusReports"/>): OpenVEX statements on the package that ships each patched object,
/// and node_exporter gauges.
/// </summary>
public static class UserStatusReports
{
    /// <summary>How soon the agent patches a process that maps an object after its patch was applied (its user-space
    /// pass; <c>user-scan-interval</c>, 30 s by default).</summary>
    private const string NextPass = "the agent patches processes started later at its next pass (30 s by default)";

    /// <summary>
    /// One statement per CVE an agent's bundle fixes in a patch running on this machine, on the Debian package that
    /// ships the object: <c>fixed</c> when every process mapping the object runs the patch, <c>affected</c> (with what
    /// is still exposed) when some do not. A patch applied by hand carries no CVE and a bundle naming no package
    /// gives scanners nothing to match: both state nothing (silence is not a claim).
    /// </summary>
    public static IReadOnlyList<OpenVexStatement> OpenVexStatements(IReadOnlyList<UserPatchStatus> patches,
        string hostname)
    {
        var statements = new List<OpenVexStatement>();
        foreach (var patch in patches.Where(p => p.Package is not null && p.Processes.Count > 0))
        {
            var product = new OpenVexProduct(OpenVexDocument.DebianPackage(patch.Package!, patch.PackageVersion),
                new Dictionary<string, string> { ["build-id"] = patch.BuildId.ToString() });
            var unpatched = patch.Unpatched ?? [];
            foreach (var cve in patch.Cves)
                statements.Add(unpatched.Count == 0
                    ? new OpenVexStatement(new OpenVexVulnerability(cve), [product], "fixed",
                        $"live patched on {hostname} by Kintsugi in {patch.Object} (build-id {patch.BuildId}), level " +
                        $"{patch.Level} (bundle {patch.Bundle}), in all {patch.Processes.Count} processes that map " +
                        $"it; {NextPass}")
                    : new OpenVexStatement(new OpenVexVulnerability(cve), [product], "affected",
                        $"live patched on {hostname} in {patch.Processes.Count} processes, but " +
                        $"{unpatched.Count} map {patch.Object} without the patch: " +
                        $"{string.Join(", ", unpatched.Take(16))}",
                        $"{NextPass}; or run kintsugi user apply on them"));
        }
        return statements;
    }

    /// <summary>The Prometheus text exposition of the user-space patches (appended to the kernel's).</summary>
    public static string Prometheus(IReadOnlyList<UserPatchStatus> patches)
    {
        var o = new PrometheusText();
        string Of(UserPatchStatus p) => $"name=\"{Label(p.Name)}\",object=\"{Label(p.Object ?? "")}\"";
        o.Gauge("kintsugi_user_patches_applied", "User-space patches running in at least one process.",
            [("", patches.Count)]);
        o.Gauge("kintsugi_user_patch_info", "A user-space patch running here: its object, build-id, package, level.",
            patches.Select(p => ($"{Of(p)},build_id=\"{p.BuildId}\",package=\"{Label(p.Package ?? "")}\"," +
                $"package_version=\"{Label(p.PackageVersion ?? "")}\",level=\"{p.Level?.ToString() ?? ""}\"", 1.0)));
        o.Gauge("kintsugi_user_patch_processes", "Processes running the patch.",
            patches.Select(p => (Of(p), (double)p.Processes.Count)));
        o.Gauge("kintsugi_user_patch_processes_unpatched",
            "Processes that map the patched object without the patch (the vulnerable code still runs there).",
            patches.Select(p => (Of(p), (double)(p.Unpatched?.Count ?? 0))));
        var cves = patches.SelectMany(p => p.Cves.Select(cve => (Cve: cve, Patch: p))).ToList();
        o.Gauge("kintsugi_user_cves_fixed",
            "CVEs fixed in every process that maps the object they are in (by an agent's bundle).",
            [("", cves.Where(c => (c.Patch.Unpatched?.Count ?? 0) == 0).Select(c => c.Cve).Distinct().Count())]);
        o.Gauge("kintsugi_user_cve_fixed",
            "A CVE a user-space patch fixes: 1 when every process mapping the object runs it, 0 when some do not.",
            cves.Select(c => ($"cve=\"{Label(c.Cve)}\",object=\"{Label(c.Patch.Object ?? "")}\"," +
                $"package=\"{Label(c.Patch.Package ?? "")}\"", (c.Patch.Unpatched?.Count ?? 0) == 0 ? 1.0 : 0.0)));
        return o.ToString();
    }

    private static string Label(string value) => PrometheusText.Label(value);
}
