using System.Globalization;
using System.Text;
using Kintsugi.Server.Api;
using Kintsugi.Server.Fleet;
using Kintsugi.Server.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using static Kintsugi.Server.Web.Pages;

namespace Kintsugi.Server.Web;

/// <summary>
/// The dashboard: fleet overview, machines, releases and channels (promote and revoke for operators), CVE
/// exposure, the audit log. Sign-in takes an API token and keeps it in an HttpOnly, SameSite=Strict
/// cookie; state-changing forms also require a same-origin Origin header.
/// </summary>
public static class Dashboard
{
    public const string SessionCookie = "kintsugi_session";

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/login", (HttpContext context) =>
            Html(context, Layout("Sign in", LoginForm(context.Request.Query["error"].ToString()), null)));
        app.MapPost("/login", async (HttpContext context, ApiTokens tokens) =>
        {
            Http.RequireSameOrigin(context);
            var form = await context.Request.ReadFormAsync(context.RequestAborted);
            var token = form["token"].ToString().Trim();
            if (await tokens.AuthenticateAsync(token, Http.Address(context), context.RequestAborted) is null)
            {
                context.Response.Redirect("/login?error=1");
                return;
            }
            context.Response.Cookies.Append(SessionCookie, token, new CookieOptions
            {
                HttpOnly = true,
                Secure = context.Request.IsHttps,
                SameSite = SameSiteMode.Strict,
                Path = "/",
                MaxAge = TimeSpan.FromHours(12),
            });
            context.Response.Redirect("/");
        });
        app.MapGet("/logout", (HttpContext context) =>
        {
            context.Response.Cookies.Delete(SessionCookie);
            context.Response.Redirect("/login");
        });

        app.MapGet("/", async (HttpContext context, Reports reports, Database db) =>
        {
            if (await SignedInAsync(context) is not { } who) return;
            var fleet = await reports.FleetAsync();
            var html = new StringBuilder("<h1>Fleet</h1><div class=\"cards\">");
            html.Append(CultureInfo.InvariantCulture,
                $"<div class=\"card\">machines<b id=\"machines-total\">{fleet.Machines}</b></div>");
            foreach (var s in fleet.ByState) html.Append(CultureInfo.InvariantCulture,
                $"<div class=\"card\">{State(s.Key)}<b>{s.Machines}</b></div>");
            html.Append(CultureInfo.InvariantCulture,
                $"<div class=\"card\">stale<b>{fleet.Stale}</b></div><div class=\"card\">releases<b>" +
                $"{fleet.Releases}</b></div><div class=\"card\">revoked<b>{fleet.RevokedReleases}</b></div></div>");
            html.Append("<h2>Kernels</h2><table><tr><th>kernel</th><th>build-id</th><th>machines</th><th>applied</th>" +
                "<th>best level available</th></tr>");
            foreach (var k in fleet.ByKernel)
                html.Append(CultureInfo.InvariantCulture,
                    $"<tr><td>{E(k.KernelRelease)}</td><td><code>{E(k.BuildId)}</code></td><td>{k.Machines}</td><td>" +
                    $"{k.Applied}</td><td>{k.BestLevel?.ToString(CultureInfo.InvariantCulture) ?? "none"}</td></tr>");
            html.Append("</table><h2>Channels</h2><table><tr><th>channel</th><th>machines</th></tr>");
            foreach (var c in fleet.ByChannel) html.Append(CultureInfo.InvariantCulture,
                $"<tr><td>{E(c.Key)}</td><td>{c.Machines}</td></tr>");
            html.Append("</table><h2>Recent changes</h2>").Append(AuditTable(await AuditChain.ReadNewestAsync(db, 15)));
            await Html(context, Layout("Fleet", html.ToString(), who));
        });

        app.MapGet("/machines", async (HttpContext context, Machines machines) =>
        {
            if (await SignedInAsync(context) is not { } who) return;
            var list = await machines.ListAsync();
            var html = new StringBuilder()
                .Append(CultureInfo.InvariantCulture,
                $"<h1>Machines ({list.Count})</h1><table id=\"machines\"><tr><th>hostname</th><th>channel</th><th>" +
                $"kernel</th><th>level</th><th>state</th><th>last check-in</th><th>address</th></tr>");
            foreach (var m in list)
                html.Append(CultureInfo.InvariantCulture,
                    $"<tr><td><a href=\"/machines/{E(m.Id)}\">{E(m.Hostname)}</a>" +
                    $"{(m.Stale ? " <span class=\"s\">stale</span>" : "")}</td><td>{E(m.Channel)}</td><td>" +
                    $"{E(m.KernelRelease)}</td><td>{m.Level?.ToString(CultureInfo.InvariantCulture) ?? "—"}</td><td>" +
                    $"{State(m.State)}</td><td>{T(m.LastCheckIn)}</td><td>{E(m.Address)}</td></tr>");
            await Html(context, Layout("Machines", html.Append("</table>").ToString(), who));
        });

        app.MapGet("/machines/{id}", async (HttpContext context, string id, Machines machines, Database db) =>
        {
            if (await SignedInAsync(context) is not { } who) return;
            var m = await machines.GetAsync(id);
            var html = new StringBuilder()
                .Append(CultureInfo.InvariantCulture, $"<h1>{E(m.Hostname)} <code>{E(m.Id)}</code></h1><table>");
            void Row(string k, string v) =>
                html.Append(CultureInfo.InvariantCulture, $"<tr><th>{k}</th><td>{v}</td></tr>");
            Row("state", State(m.State) + (m.StateSince is null ? "" : $" since {T(m.StateSince)}"));
            Row("channel", E(m.Channel)); Row("kernel", E(m.KernelRelease) + " " + E(m.PackageVersion)); Row("build-id",
                $"<code>{E(m.BuildId)}</code>");
            Row("level", m.Level?.ToString(CultureInfo.InvariantCulture) ?? "none"); Row("bundle",
                $"<code>{E(m.Bundle)}</code>");
            Row("effective version", E(m.EffectiveVersion)); Row("taint",
                m.Taint.ToString(CultureInfo.InvariantCulture)); Row("detail", E(m.Detail));
            Row("offered release", E(m.TargetRelease)); Row("agent", E(m.AgentVersion)); Row("enrolled",
                T(m.EnrolledAt));
            Row("last check-in", T(m.LastCheckIn)
                + (m.Stale ? " <span class=\"s bad\">stale</span>" : "")); Row("address",
                E(m.Address)); Row("machine-id", $"<code>{E(m.HostMachineId)}</code>");
            html.Append("</table><h2>History</h2>")
                .Append(AuditTable(await AuditChain.ReadNewestAsync(db, 100, $"machine:{m.Id}")));
            await Html(context, Layout(m.Hostname, html.ToString(), who));
        });

        app.MapGet("/releases", async (HttpContext context, Releases releases) =>
        {
            if (await SignedInAsync(context) is not { } who) return;
            var channels = await releases.ChannelsAsync();
            var list = await releases.ListAsync();
            var operatorRole = who.Role >= Role.Operator;
            var html = new StringBuilder("<h1>Releases &amp; channels</h1>");
            if (context.Request.Query["done"].ToString() is { Length: > 0 } done)
                html.Append(CultureInfo.InvariantCulture, $"<div class=\"flash\" id=\"flash\">{E(done)}</div>");
            html.Append("<h2>Channels, in order</h2><table><tr><th>#</th><th>channel</th><th>promotion into " +
                "it</th></tr>");
            foreach (var c in channels)
                html.Append(CultureInfo.InvariantCulture,
                    $"<tr><td>{c.Position}</td><td>{E(c.Name)}</td><td>" +
                    $"{(c.Position == 0 ? "where releases land on publish"
                        : c.PromoteAfterSeconds is { } d
                            ? $"automatic {d} s after the previous channel, when at least {c.MinApplied} machines " +
                                "there report applied and none failed"
                        : "manual only")}</td></tr>");
            html.Append("</table><h2>Releases</h2><table id=\"releases\"><tr><th>release</th><th>kernel</th><th>" +
                "level</th><th>CVEs</th><th>channels</th><th>health</th><th>published</th><th></th></tr>");
            foreach (var r in list)
            {
                var cves = string.Join(", ", r.Fixes.SelectMany(f => f.Cves).Select(c => c.Id).Distinct());
                var chans = string.Join(" ",
                    r.Channels.Select(p =>
                    $"<span class=\"s\" title=\"{T(p.PromotedAt)} by {E(p.PromotedBy)}\">{E(p.Channel)}</span>"));
                var actions = "";
                if (r.Revoked is { } rv) actions = $"<span class=\"s s-revoked\">revoked</span> {T(rv.RevokedAt)} by " +
                    $"{E(rv.RevokedBy)}: {E(rv.Reason)}";
                else if (operatorRole)
                {
                    var next = channels.FirstOrDefault(c => r.Channels.All(p => p.Channel != c.Name));
                    if (next is not null)
                        actions +=
                            $"<form class=\"inline\" method=\"post\" action=\"/releases/{E(r.Id)}/promote\"><input " +
                            $"type=\"hidden\" name=\"channel\" value=\"{E(next.Name)}\"><button " +
                            $"id=\"promote-{E(r.Id)}\">Promote to {E(next.Name)}</button></form> ";
                    actions += $"<form class=\"inline\" method=\"post\" action=\"/releases/{E(r.Id)}/revoke\"><input " +
                        $"type=\"text\" name=\"reason\" placeholder=\"reason\" required id=\"reason-{E(r.Id)}\"> " +
                        $"<button class=\"danger\" id=\"revoke-{E(r.Id)}\">Revoke</button></form>";
                }
                html.Append(CultureInfo.InvariantCulture,
                    $"<tr id=\"release-{E(r.Id)}\"><td><code>{E(r.Id)}</code></td><td>{E(r.Target())}<br><code>" +
                    $"{E(r.BuildId[..Math.Min(16, r.BuildId.Length)])}…</code></td><td>{r.Level}</td><td>" +
                    $"{E(cves)}</td><td>{chans}</td>" +
                    $"<td><span class=\"s ok\">{r.Health.Applied} applied</span> <span class=\"s " +
                        $"{(r.Health.Failed > 0 ? "bad" : "")}\">{r.Health.Failed} " +
                        $"failed</span></td><td>{T(r.PublishedAt)}<br>{E(r.PublishedBy)}</td><td>{actions}</td></tr>");
            }
            await Html(context, Layout("Releases", html.Append("</table>").ToString(), who));
        });

        app.MapPost("/releases/{id}/promote", async (HttpContext context, string id, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var form = await context.Request.ReadFormAsync(context.RequestAborted);
            var channel = form["channel"].ToString();
            var result = await releases.PromoteAsync(id,
                new PromoteRequest(channel.Length == 0 ? null : channel, "manual (dashboard)"), who.Actor);
            context.Response.Redirect($"/releases?done=" +
                $"{Uri.EscapeDataString($"{result.Release.Id} promoted to {string.Join(", ", result.PromotedTo)}")}");
        });
        app.MapPost("/releases/{id}/revoke", async (HttpContext context, string id, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var form = await context.Request.ReadFormAsync(context.RequestAborted);
            var result = await releases.RevokeAsync(id, new RevokeRequest(form["reason"].ToString()), who.Actor);
            context.Response.Redirect($"/releases?done={Uri.EscapeDataString($"{result.Id} revoked")}");
        });

        app.MapGet("/exposure", async (HttpContext context, Reports reports) =>
        {
            if (await SignedInAsync(context) is not { } who) return;
            var exposure = await reports.ExposureAsync();
            var html = new StringBuilder("<h1>CVE exposure</h1><p class=\"muted\">Machines whose exact kernel build " +
                "has a release fixing the CVE, but which do not report it applied.</p>");
            html.Append("<table id=\"exposure\"><tr><th>CVE</th><th>severity</th><th>published</th><th>exposed</th>" +
                "<th>fixed</th><th>exposed machines</th></tr>");
            foreach (var c in exposure.Cves)
                html.Append(string.Create(CultureInfo.InvariantCulture,
                    $"<tr><td>{E(c.Cve)}</td><td>{E(c.Severity)}</td><td>{c.Published:yyyy-MM-dd}</td><td><span " +
                    $"class=\"s {(c.Exposed > 0 ? "bad" : "ok")}\">{c.Exposed}</span></td><td>{c.Fixed}</td><td>") +
                    string.Join("<br>",
                        c.Machines.Take(50)
                        .Select(m =>
                        $"<a href=\"/machines/{E(m.Machine)}\">{E(m.Hostname)}</a> {State(m.State)} (fix: level " +
                        $"{m.FixLevel} since {T(m.FixAvailableSince)})")) +
                    (c.Machines.Count > 50 ? $"<br>… and {c.Machines.Count - 50} more" : "") + "</td></tr>");
            await Html(context, Layout("CVE exposure", html.Append("</table>").ToString(), who));
        });

        app.MapGet("/audit", async (HttpContext context, Database db) =>
        {
            if (await SignedInAsync(context) is not { } who) return;
            var verification = await AuditChain.VerifyAsync(db, context.RequestAborted);
            var html = new StringBuilder("<h1>Audit log</h1>");
            html.Append(verification.Intact
                ? $"<p id=\"chain\" class=\"s ok\">chain intact: {verification.Events} events, head " +
                    $"{E(verification.HeadHash)}</p>"
                : $"<div id=\"chain\" class=\"flash\"><b>The audit chain is broken:</b><br>" +
                $"{string.Join("<br>", verification.Problems.Select(p => $"event {p.Seq}: {E(p.Problem)}"))}</div>");
            html.Append(AuditTable(await AuditChain.ReadNewestAsync(db, 500)));
            await Html(context, Layout("Audit log", html.ToString(), who));
        });
    }

    private static string LoginForm(string error) => $"""
        <h1>Sign in</h1>{(error.Length > 0 ? "<div class=\"flash\">That token is unknown, revoked or expired.</div>" : "")}
        <form method="post" action="/login"><p>API token (<code>kintsugi server tokens create</code>)</p>
        <input type="password" name="token" id="token" size="60" autocomplete="off" required> <button id="sign-in">Sign in</button></form>
        """;

    private static async Task<Principal?> SignedInAsync(HttpContext context)
    {
        try { return await Http.RequireAsync(context, Role.Auditor); }
        catch (ApiProblem) { context.Response.Redirect("/login"); return null; }
    }

    private static Task Html(HttpContext context, string html)
    {
        context.Response.ContentType = "text/html; charset=utf-8";
        context.Response.Headers.ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; form-action " +
            "'self'; frame-ancestors 'none'";
        context.Response.Headers.XContentTypeOptions = "nosniff";
        return context.Response.WriteAsync(html);
    }
}
