using System.Globalization;
using System.Text;
using Kintsugi.Protocol;
using Kintsugi.Server.Fleet;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;

namespace Kintsugi.Server.Api;

/// <summary>Reports (fleet, CVE exposure, PCI DSS 6.3.3 compliance as JSON, CSV or HTML) and Prometheus
/// metrics.</summary>
public static class ReportsApi
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/api/v1/reports/fleet", async (HttpContext context, Reports reports) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            return await reports.FleetAsync();
        }).Describe("Fleet status", Role.Auditor);
        app.MapGet("/api/v1/reports/exposure", async (HttpContext context, Reports reports) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            var cve = Http.Query(context, "cve");
            if (cve.Length > 0
                && !Kintsugi.Bundles.CveId.TryParse(cve,
                out _)) throw ApiProblem.BadRequest($"'{cve}' is not a CVE id");
            return await reports.ExposureAsync(cve.Length == 0 ? null : cve);
        }).Query("cve", "only this CVE (CVE-YYYY-NNNN)")
          .Describe("Per-CVE exposure", Role.Auditor);
        app.MapGet("/api/v1/reports/compliance",
            async Task<Results<Ok<ComplianceReport>, EmptyHttpResult>> (HttpContext context, Reports reports) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            var severity = Http.Query(context, "severity") is { Length: > 0 } s ? s : "high";
            DateTimeOffset? asOf = null;
            if (Http.Query(context, "asOf") is { Length: > 0 } text)
                asOf = DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal,
                    out var parsed) ? parsed.ToUniversalTime()
                    : throw ApiProblem.BadRequest($"asOf '{text}' is not an RFC 3339 time");
            var report = await reports.ComplianceAsync(severity, asOf);
            switch (Http.Query(context, "format"))
            {
                case "" or "json":
                    return TypedResults.Ok(report);
                case "csv":
                    context.Response.ContentType = "text/csv; charset=utf-8";
                    context.Response.Headers.ContentDisposition = "attachment; filename=\"kintsugi-pci-dss-6.3.3.csv\"";
                    await context.Response.WriteAsync(ComplianceCsv(report));
                    break;
                case "html":
                    context.Response.ContentType = "text/html; charset=utf-8";
                    await context.Response.WriteAsync(Web.Pages.ComplianceDocument(report));
                    break;
                default:
                    throw ApiProblem.BadRequest("format must be json, csv or html");
            }
            return TypedResults.Empty;
        }).Query("severity", "the lowest severity the report covers (default: high)",
              values: Reports.Severities)
          .Query("asOf", "the time the report is for (RFC 3339; default: now)", QueryValue.Time)
          .Query("format", "json (default), csv (text/csv) or html (text/html)", values: ["json", "csv", "html"])
          .AlsoReplies("text/csv", "with format=csv: one line per machine and CVE, as a download")
          .AlsoReplies("text/html", "with format=html: a printable document")
          .Describe("PCI DSS 6.3.3 30-day compliance", Role.Auditor);
        app.MapGet("/metrics", async (HttpContext context, Reports reports, ServerMetrics metrics) =>
        {
            await Http.RequireAsync(context, Role.Auditor);
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await context.Response.WriteAsync(await PrometheusAsync(reports, metrics));
        }).Produces<string>(StatusCodes.Status200OK, "text/plain")
          .Describe("Prometheus metrics (text format 0.0.4)", Role.Auditor);
    }

    public static string ComplianceCsv(ComplianceReport report)
    {
        var csv = new StringBuilder("machine,hostname,channel,kernel_release,build_id,cve,severity,fix_released_at," +
            "deadline,applied_at,currently_fixed,days_to_apply,status,breach\n");
        static string F(DateTimeOffset? t) => t?.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture) ?? "";
        static string Q(string text) => text.IndexOfAny([',', '"', '\n', '\r']) >= 0 || text.StartsWith('=')
            || text.StartsWith('+') || text.StartsWith('-') || text.StartsWith('@')
            ? "\"" + text.Replace("\"", "\"\"") + "\"" : text;
        foreach (var r in report.Items)
            csv.Append(CultureInfo.InvariantCulture,
                $"{r.Machine},{Q(r.Hostname)},{r.Channel},{Q(r.KernelRelease)},{r.BuildId},{r.Cve},{r.Severity}," +
                $"{F(r.FixReleasedAt)},{F(r.Deadline)},{F(r.AppliedAt)},{(r.CurrentlyFixed ? "true" : "false")}," +
                $"{r.DaysToApply?.ToString(CultureInfo.InvariantCulture) ?? ""},{r.Status}," +
                $"{(r.Breach ? "true" : "false")}\n");
        return csv.ToString();
    }

    private static string Label(string value) => value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    public static async Task<string> PrometheusAsync(Reports reports, ServerMetrics metrics)
    {
        var fleet = await reports.FleetAsync();
        var exposure = await reports.ExposureAsync();
        var o = new StringBuilder();
        void Header(string name, string type, string help) =>
            o.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} {type}\n");

        Header("kintsugi_checkins_total", "counter",
            "Agent check-ins answered by this replica, by the action returned.");
        foreach (var action in Enum.GetValues<CheckInAction>())
            o.Append(CultureInfo.InvariantCulture,
                $"kintsugi_checkins_total{{action=\"{action.ToString().ToLowerInvariant()}\"}} " +
                $"{metrics.CheckIns.GetValueOrDefault(action)?.Value ?? 0}\n");
        Header("kintsugi_enrollments_total", "counter", "Machines enrolled by this replica.");
        o.Append(CultureInfo.InvariantCulture, $"kintsugi_enrollments_total {metrics.Enrollments.Value}\n");
        Header("kintsugi_enrollments_rate_limited_total", "counter",
            "Enrollments refused by the per-address rate limit.");
        o.Append(CultureInfo.InvariantCulture,
            $"kintsugi_enrollments_rate_limited_total {metrics.EnrollmentsRateLimited.Value}\n");

        Header("kintsugi_machines", "gauge", "Enrolled machines by reported patch state.");
        foreach (var state in PatchStates.All.Append("never-checked-in"))
            o.Append(CultureInfo.InvariantCulture,
                $"kintsugi_machines{{state=\"{state}\"}} " +
                $"{fleet.ByState.FirstOrDefault(b => b.Key == state)?.Machines ?? 0}\n");
        Header("kintsugi_machines_stale", "gauge", "Machines that have not checked in within the stale interval.");
        o.Append(CultureInfo.InvariantCulture, $"kintsugi_machines_stale {fleet.Stale}\n");
        Header("kintsugi_machines_by_channel", "gauge", "Enrolled machines by channel.");
        foreach (var c in fleet.ByChannel) o.Append(CultureInfo.InvariantCulture,
            $"kintsugi_machines_by_channel{{channel=\"{Label(c.Key)}\"}} {c.Machines}\n");
        Header("kintsugi_cve_exposed_machines", "gauge",
            "Machines whose kernel build has a fix for the CVE but do not run it.");
        foreach (var cve in exposure.Cves)
            o.Append(CultureInfo.InvariantCulture,
                $"kintsugi_cve_exposed_machines{{cve=\"{cve.Cve}\",severity=\"{cve.Severity}\"}} {cve.Exposed}\n");
        Header("kintsugi_releases", "gauge", "Published releases by status.");
        o.Append(CultureInfo.InvariantCulture,
            $"kintsugi_releases{{status=\"active\"}} " +
            $"{fleet.Releases - fleet.RevokedReleases}\nkintsugi_releases{{status=\"revoked\"}} " +
            $"{fleet.RevokedReleases}\n");
        Header("kintsugi_epoch", "gauge", "The revocation epoch (moves on every revoke and promotion).");
        o.Append(CultureInfo.InvariantCulture, $"kintsugi_epoch {fleet.Epoch}\n");

        Header("kintsugi_http_request_duration_seconds", "histogram",
            "HTTP request latency by route and status class.");
        foreach (var ((method, route, status), histogram) in metrics.Requests.OrderBy(kv => kv.Key.Route,
            StringComparer.Ordinal).ThenBy(kv => kv.Key.Method, StringComparer.Ordinal))
            histogram.Write(o, "kintsugi_http_request_duration_seconds",
                $"method=\"{method}\",route=\"{Label(route)}\",code=\"{status}xx\"");
        return o.ToString();
    }
}
