using System.Globalization;
using System.Net;
using System.Text;
using Kintsugi.Server.Fleet;
using Kintsugi.Server.Storage;

namespace Kintsugi.Server.Web;

/// <summary>Server-rendered HTML: no script, one stylesheet, every value encoded.</summary>
public static class Pages
{
    public static string E(string? text) => WebUtility.HtmlEncode(text ?? "");

    public static string T(DateTimeOffset? time) =>
        time?.ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture) ?? "—";

    private const string Style = """
        body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
        header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:22px;align-items:center}
        header a{color:#d6dcea;text-decoration:none} header a:hover{color:#fff} header .brand{font-weight:700;color:#f3c14b}
        header .who{margin-left:auto;font-size:12px;color:#9aa3b5}
        main{padding:20px 24px;max-width:1300px} h1{font-size:22px;margin:0 0 14px} h2{font-size:17px;margin:22px 0 8px}
        table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}
        th,td{padding:6px 9px;border-bottom:1px solid #eceff3;text-align:left;vertical-align:top} th{background:#eef1f5;font-weight:600}
        code{font-size:12px} .cards{display:flex;gap:12px;flex-wrap:wrap}
        .card{background:#fff;border:1px solid #dde1e8;padding:12px 16px;min-width:130px} .card b{display:block;font-size:24px}
        .s{padding:1px 7px;border-radius:9px;font-size:12px;background:#e4e7ec;white-space:nowrap}
        .s-applied,.s-compliant,.ok{background:#d3f2dc;color:#145c2a} .s-apply-failed,.s-applied-with-bug,.s-overdue,.s-late,.bad{background:#fbd5d5;color:#8a1616}
        .s-applying,.s-open{background:#fff1c6;color:#6b4e00} .s-revoked{background:#e8dcf7;color:#4b2a80}
        form.inline{display:inline} input[type=text],input[type=password]{padding:4px 6px;border:1px solid #bcc3cf}
        button{padding:4px 10px;border:1px solid #3b4a66;background:#3b4a66;color:#fff;cursor:pointer} button.danger{background:#a52626;border-color:#a52626}
        .flash{background:#fff8dc;border:1px solid #e7d38a;padding:8px 12px;margin-bottom:14px} .muted{color:#6b7385}
        @media print{header,form,button{display:none} body{background:#fff} main{padding:0}}
        """;

    public static string Layout(string title, string body, Principal? who)
    {
        var nav = who is null ? "" : $"""
            <a href="/">Fleet</a><a href="/machines">Machines</a><a href="/releases">Releases &amp; channels</a><a href="/exposure">CVE exposure</a>
            <a href="/api/v1/reports/compliance?format=html">PCI DSS 6.3.3</a><a href="/audit">Audit log</a>
            <span class="who">{E(who.Actor.Name)} · <a href="/logout">sign out</a></span>
            """;
        return $"""
            <!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
            <title>{E(title)} · Kintsugi</title><style>{Style}</style></head>
            <body><header><span class="brand">Kintsugi</span>{nav}</header><main>{body}</main></body></html>
            """;
    }

    public static string State(string? state) => state is null ? "<span class=\"s\">never checked in</span>"
        : $"<span class=\"s s-{E(state)}\">{E(state)}</span>";

    public static string AuditTable(IEnumerable<AuditEvent> events)
    {
        var html = new StringBuilder("<table><tr><th>#</th><th>when</th><th>who</th><th>from</th><th>what</th><th>" +
            "subject</th><th>detail</th></tr>");
        foreach (var e in events)
            html.Append(CultureInfo.InvariantCulture,
                $"<tr><td>{e.Seq}</td><td>{T(e.At)}</td><td>{E(e.Actor)}</td><td>{E(e.Address)}</td><td><code>" +
                $"{E(e.Action)}</code></td><td><code>{E(e.Subject)}</code></td><td><code>{E(e.Detail)}</code></td>" +
                $"</tr>");
        return html.Append("</table>").ToString();
    }

    /// <summary>The printable PCI DSS 6.3.3 report.</summary>
    public static string ComplianceDocument(ComplianceReport report)
    {
        var html = new StringBuilder();
        html.Append(CultureInfo.InvariantCulture, $"""
            <h1>PCI DSS 6.3.3 — security patches installed within {report.WindowDays} days of release</h1>
            <p>Generated {T(report.GeneratedAt)} · severity {E(report.MinimumSeverity)} and above · {report.Rows} machine/CVE pairs ·
            <b class="{(report.Breaches > 0 ? "s bad" : "s ok")}">{report.Breaches} in breach</b></p>
            <p class="muted">A row exists for each enrolled machine and each CVE that a release for its exact kernel build fixes. The clock starts when the
            first good release containing the fix was published on this server; applied is when the machine first reported <code>applied</code> at a level
            containing it.</p>
            <table><tr><th>machine</th><th>kernel</th><th>CVE</th><th>severity</th><th>fix released</th><th>deadline</th><th>applied</th><th>days</th><th>status</th><th>breach</th></tr>
            """);
        foreach (var r in report.Items)
            html.Append(CultureInfo.InvariantCulture,
                $"<tr><td>{E(r.Hostname)}<br><code>{E(r.Machine)}</code></td><td>{E(r.KernelRelease)}</td><td>" +
                $"{E(r.Cve)}</td><td>{E(r.Severity)}</td>" +
                $"<td>{T(r.FixReleasedAt)}</td><td>{T(r.Deadline)}</td><td>{T(r.AppliedAt)}</td><td>" +
                $"{r.DaysToApply?.ToString(CultureInfo.InvariantCulture) ?? "—"}</td>" +
                $"<td><span class=\"s s-{r.Status}\">{r.Status}</span></td><td>" +
                $"{(r.Breach ? "<b class=\"s bad\">yes</b>" : "no")}</td></tr>");
        html.Append("</table>");
        return Layout("PCI DSS 6.3.3 compliance", html.ToString(), null);
    }
}
