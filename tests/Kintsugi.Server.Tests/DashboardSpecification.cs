using Microsoft.Playwright;

namespace Kintsugi.Server.Tests;

/// <summary>
/// The dashboard in Debian's headless Chromium (driven by Playwright): sign in, fleet overview, machine
/// detail, releases with promote and revoke, CVE exposure, the audit log. Screenshots are kept in
/// artifacts/test-results/dashboard/ as evidence.
/// </summary>
public sealed class DashboardSpecification
{
    private static string Screenshots
    {
        get
        {
            var root = AppContext.BaseDirectory;
            for (var dir = new DirectoryInfo(root); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Kintsugi.slnx"))) { root = dir.FullName; break; }
            var path = Path.Combine(root, "artifacts", "test-results", "dashboard");
            Directory.CreateDirectory(path);
            return path;
        }
    }

    [Fact]
    public async Task An_operator_signs_in_sees_the_fleet_promotes_and_revokes_and_an_auditor_cannot()
    {
        const string Chromium = "/usr/bin/chromium";
        Assert.True(File.Exists(Chromium),
            "Debian's chromium package is missing: run scripts/install-prerequisites.sh");
        await using var server = await TestServer.StartAsync();
        var release = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1,
            ("CVE-2024-1086", Kintsugi.Bundles.CveSeverity.High)));
        var token = await server.EnrollmentTokenAsync();
        var patched = new SimulatedAgent(server, Kernels.Debian61, "web-patched");
        var exposed = new SimulatedAgent(server, Kernels.Debian61, "web-exposed");
        await patched.EnrollAsync(token); await exposed.EnrollAsync(token);
        await patched.SyncAsync(server.Publisher.PublicKey);
        await exposed.CheckInAsync();
        var operatorToken = await server.TokenAsync(Role.Operator, "olivia");
        var auditorToken = await server.TokenAsync(Role.Auditor, "arthur");

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(
            new BrowserTypeLaunchOptions { ExecutablePath = Chromium, Headless = true, Args = ["--no-sandbox"] });
        var context = await browser.NewContextAsync(new BrowserNewContextOptions
        {
            IgnoreHTTPSErrors = true,
            ViewportSize = new ViewportSize { Width = 1400, Height = 900 }
        });
        var page = await context.NewPageAsync();
        var shots = Screenshots;

        await page.GotoAsync(new Uri(server.BaseAddress, "/").ToString());
        Assert.EndsWith("/login", page.Url);
        await page.FillAsync("#token", operatorToken);
        await page.ClickAsync("#sign-in");
        await page.WaitForURLAsync(u => !u.EndsWith("/login", StringComparison.Ordinal));
        Assert.Equal("2", await page.InnerTextAsync("#machines-total"));
        await page.ScreenshotAsync(
            new PageScreenshotOptions { Path = Path.Combine(shots, "1-fleet.png"), FullPage = true });

        await page.GotoAsync(new Uri(server.BaseAddress, "/machines").ToString());
        await page.ClickAsync("text=web-patched");
        Assert.Contains("applied", await page.InnerTextAsync("main"));
        Assert.Contains("machine.state", await page.InnerTextAsync("main"));
        await page.ScreenshotAsync(
            new PageScreenshotOptions { Path = Path.Combine(shots, "2-machine.png"), FullPage = true });

        await page.GotoAsync(new Uri(server.BaseAddress, "/exposure").ToString());
        var exposure = await page.InnerTextAsync("#exposure");
        Assert.Contains("CVE-2024-1086", exposure);
        Assert.Contains("web-exposed", exposure);
        Assert.DoesNotContain("web-patched", exposure);
        await page.ScreenshotAsync(
            new PageScreenshotOptions { Path = Path.Combine(shots, "3-exposure.png"), FullPage = true });

        await page.GotoAsync(new Uri(server.BaseAddress, "/releases").ToString());
        await page.ClickAsync($"#promote-{release}");
        Assert.Contains("promoted to production", await page.InnerTextAsync("#flash"));
        await page.FillAsync($"#reason-{release}", "regression seen on canary");
        await page.ClickAsync($"#revoke-{release}");
        Assert.Contains("revoked", await page.InnerTextAsync("#flash"));
        Assert.Contains("regression seen on canary", await page.InnerTextAsync($"#release-{release}"));
        await page.ScreenshotAsync(
            new PageScreenshotOptions { Path = Path.Combine(shots, "4-releases.png"), FullPage = true });

        await page.GotoAsync(new Uri(server.BaseAddress, "/audit").ToString());
        Assert.Contains("chain intact", await page.InnerTextAsync("#chain"));
        var audit = await page.InnerTextAsync("main");
        Assert.Contains("token:olivia (operator)", audit);
        Assert.Contains("release.revoke", audit);
        await page.ScreenshotAsync(
            new PageScreenshotOptions { Path = Path.Combine(shots, "5-audit.png"), FullPage = true });

        await page.GotoAsync(new Uri(server.BaseAddress, "/api/v1/reports/compliance?format=html").ToString());
        Assert.Contains("PCI DSS 6.3.3", await page.InnerTextAsync("h1"));
        await page.ScreenshotAsync(
            new PageScreenshotOptions { Path = Path.Combine(shots, "6-compliance.png"), FullPage = true });

        // An auditor sees releases but no promote or revoke buttons, and a forged post is refused.
        var auditorPage = await (
            await browser.NewContextAsync(new BrowserNewContextOptions { IgnoreHTTPSErrors = true })).NewPageAsync();
        await auditorPage.GotoAsync(new Uri(server.BaseAddress, "/login").ToString());
        await auditorPage.FillAsync("#token", auditorToken);
        await auditorPage.ClickAsync("#sign-in");
        await auditorPage.WaitForURLAsync(u => !u.EndsWith("/login", StringComparison.Ordinal));
        await auditorPage.GotoAsync(new Uri(server.BaseAddress, "/releases").ToString());
        Assert.Equal(0, await auditorPage.Locator("button").CountAsync());
        var forged = await auditorPage.APIRequest.PostAsync(new Uri(server.BaseAddress, $"/releases/{release}/promote")
            .ToString(), new APIRequestContextOptions { Form = auditorPage.APIRequest.CreateFormData() });
        Assert.Equal(403, forged.Status);
    }
}
