namespace Kintsugi.Kernel;

/// <summary>
/// This machine's status in the formats scanners and monitoring read: an OpenVEX document (the CVEs the
/// applied level fixes, status <c>fixed</c>, on the running kernel package) and a node_exporter textfile.
/// </summary>
public static class StatusReports
{
    /// <summary>
    /// One statement per CVE the enabled level fixes, on the running kernel's package: a scanner that reads
    /// the installed package version (still the vulnerable one) learns the CVE is fixed on this machine.
    /// Nothing applied, or a level that is not enabled, states nothing: silence is not a claim.
    /// </summary>
    public static OpenVexDocument OpenVex(MachineStatus status, string hostname, string tooling, DateTimeOffset now)
    {
        var product = new OpenVexProduct(
            OpenVexDocument.DebianKernelPackage(status.Release, RunningKernel.PackageVersionIn(status.KernelVersion)));
        var statements = status.State is "applied" or "applied-with-bug" && status.Level is { } level
            ? (status.CvesFixed ?? [])
            .Select(cve => new OpenVexStatement(new OpenVexVulnerability(cve.Id), [product], "fixed",
                $"live patched on {hostname} by Kintsugi level {level} (bundle {status.Bundle}); effective kernel " +
                $"version {status.EffectivePackageVersion ?? status.EffectiveVersion}"))
                .ToList()
            : [];
        return OpenVexDocument.Create($"Kintsugi on {hostname}", tooling, statements, now);
    }

    /// <summary>
    /// The Prometheus text exposition format, for node_exporter's textfile collector: one gauge per fact, the
    /// state as a one-hot label set, and the CVEs fixed with their severity.
    /// </summary>
    public static string Prometheus(MachineStatus status)
    {
        var o = new PrometheusText();
        var kernel = $"release=\"{Label(status.Release)}\"";
        o.Gauge("kintsugi_kernel_info", "The running kernel: release, build-id, real and effective version strings.",
            [($"{kernel},build_id=\"{Label(status.BuildId ?? "")}\",version=\"{Label(status.KernelVersion)}\"," +
            $"effective_version=\"{Label(status.EffectiveVersion)}\"", 1)]);
        o.Gauge("kintsugi_livepatch_state", "The machine's livepatch state (1 for the current one).",
            PatchStates.All.Select(state => ($"state=\"{state}\"", state == status.State ? 1.0 : 0.0)));
        o.Gauge("kintsugi_livepatch_level", "The applied cumulative level (0: none).", [(kernel, status.Level ?? 0)]);
        o.Gauge("kintsugi_livepatch_patches_loaded", "Livepatch modules loaded in the kernel.",
            [("", status.Patches.Count(p => p.Loaded))]);
        o.Gauge("kintsugi_livepatch_disabled", "1 when the kill switch is set.",
            [("", status.DisabledBecause is null ? 0 : 1)]);
        o.Gauge("kintsugi_livepatch_cves_fixed", "CVEs the applied level fixes.", [("", status.CvesFixed?.Count ?? 0)]);
        o.Gauge("kintsugi_livepatch_cve_fixed", "A CVE the applied level fixes, with its severity.",
            (status.CvesFixed ?? []).Select(c => ($"cve=\"{Label(c.Id)}\",severity=\"{Label(c.Severity)}\"", 1.0)));
        if (status.LastAttempt is { } attempt)
            o.Gauge("kintsugi_livepatch_last_attempt_timestamp_seconds",
                "When the agent last tried to apply, by outcome.",
                [($"outcome=\"{Label(attempt.Outcome)}\"", attempt.At.ToUnixTimeSeconds())]);
        return o.ToString();
    }

    private static string Label(string value) => PrometheusText.Label(value);
}
