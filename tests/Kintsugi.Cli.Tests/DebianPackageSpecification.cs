using Kintsugi.Testing;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// The Debian packages: what they contain, what lintian says of them, and what dpkg does with them on a real
/// Debian 12 root file system: install, upgrade, remove and purge, per Debian policy.
/// </summary>
[Collection(DebianPackages.Collection)]
public sealed class DebianPackageSpecification(DebianPackages packages)
{
    private static async Task<string> Dpkg(params string[] arguments)
    {
        var result = await ExternalCommand.RunAsync("dpkg-deb", arguments);
        Assert.True(result.Succeeded, result.StandardError);
        return result.StandardOutput;
    }

    private static async Task<IReadOnlyList<string>> Contents(string deb) =>
        [.. (await Dpkg("-c", deb)).Split('\n', StringSplitOptions.RemoveEmptyEntries)
        .Select(line => line[(line.IndexOf(" ./", StringComparison.Ordinal) + 2)..].Split(" -> ")[0])];

    [DebianPackageFact]
    public async Task The_agent_package_has_the_binary_both_units_a_man_page_per_group_completion_and_configuration()
    {
        var files = await Contents(packages.Agent(1));
        foreach (var expected in new[]
        {
            "/usr/bin/kintsugi", "/lib/systemd/system/kintsugi-agent.service",
                "/lib/systemd/system/kintsugi-kernel.service",
            "/usr/share/man/man1/kintsugi.1.gz", "/usr/share/man/man1/kintsugi-kernel.1.gz",
            "/usr/share/man/man1/kintsugi-agent.1.gz",
            "/usr/share/man/man1/kintsugi-keys.1.gz", "/usr/share/man/man1/kintsugi-bundle.1.gz",
            "/usr/share/man/man1/kintsugi-server.1.gz",
            "/usr/share/bash-completion/completions/kintsugi", "/usr/share/zsh/vendor-completions/_kintsugi",
            "/etc/kintsugi/agent.conf", "/usr/share/doc/kintsugi/copyright",
            "/usr/share/doc/kintsugi/changelog.Debian.gz",
        })
            Assert.Contains(expected, files);
        Assert.Equal("/etc/kintsugi/agent.conf", (await Dpkg("-I", packages.Agent(1), "conffiles")).Trim());
        Assert.Equal($"{DebianPackages.Version}-1", (await Dpkg("-f", packages.Agent(1), "Version")).Trim());
    }

    [DebianPackageFact]
    public async Task The_server_package_is_self_contained_with_its_unit_and_configuration()
    {
        var files = await Contents(packages.Server(1));
        foreach (var expected in new[]
        {
            "/usr/bin/kintsugi-server", "/usr/lib/kintsugi-server/kintsugi-server",
                "/lib/systemd/system/kintsugi-server.service",
            "/etc/kintsugi/server.conf", "/usr/share/man/man8/kintsugi-server.8.gz",
            "/usr/share/doc/kintsugi-server/copyright",
        })
            Assert.Contains(expected, files);
        // No .NET runtime or ASP.NET Core package is depended on.
        var depends = (await Dpkg("-f", packages.Server(1), "Depends")).Trim();
        Assert.DoesNotContain("dotnet", depends);
        Assert.DoesNotContain("aspnetcore", depends);
        Assert.Contains("adduser", depends);
    }

    [DebianPackageFact]
    public async Task Lintian_reports_nothing_that_is_not_overridden_with_a_reason()
    {
        var result = await ExternalCommand.RunAsync("lintian",
            ["--fail-on", "error,warning", "--info", "--no-tag-display-limit", packages.Agent(1), packages.Server(1)]);
        Assert.True(result.ExitCode == 0,
            $"lintian exited {result.ExitCode}:\n{result.StandardOutput}\n{result.StandardError}");
    }

    [DebianPackageFact]
    public async Task The_agent_package_installs_upgrades_keeps_configuration_on_remove_and_purges_it()
    {
        using var root = await DebianRoot.CreateAsync();
        await root.SucceedAsync("dpkg", "-i", root.Put(packages.Agent(1)));
        // The binary runs in a plain Debian 12 root: self-contained, no .NET installed there.
        Assert.Equal("0.1.0", (await root.SucceedAsync("kintsugi", "version")).Trim());
        Assert.False(File.Exists(root["/usr/bin/dotnet"]));
        // Boot re-application is enabled; the agent waits for `agent enroll`.
        Assert.Equal("/lib/systemd/system/kintsugi-kernel.service",
            new FileInfo(root["/etc/systemd/system/multi-user.target.wants/kintsugi-kernel.service"]).LinkTarget);
        Assert.Null(new FileInfo(root["/etc/systemd/system/multi-user.target.wants/kintsugi-agent.service"])
            .LinkTarget);
        Assert.Contains("ExecStart=/usr/bin/kintsugi agent run --config /etc/kintsugi/agent.conf",
            File.ReadAllText(root["/lib/systemd/system/kintsugi-agent.service"]));
        Assert.True(Directory.Exists(root["/etc/kintsugi/trust"]));

        // The administrator's configuration survives an upgrade.
        File.AppendAllText(root["/etc/kintsugi/agent.conf"], "offline-directory = /srv/bundles\n");
        await root.SucceedAsync("dpkg", "-i", root.Put(packages.Agent(2)));
        Assert.Contains($"{DebianPackages.Version}-2",
            await root.SucceedAsync("dpkg-query", "-W", "-f=${Version}", "kintsugi"));
        Assert.Contains("offline-directory = /srv/bundles", File.ReadAllText(root["/etc/kintsugi/agent.conf"]));

        // Remove: the program goes, configuration and installed patches stay.
        Directory.CreateDirectory(root["/var/lib/kintsugi/6.1.0-56-cloud-amd64"]);
        await root.SucceedAsync("dpkg", "-r", "kintsugi");
        Assert.False(File.Exists(root["/usr/bin/kintsugi"]));
        Assert.True(File.Exists(root["/etc/kintsugi/agent.conf"]));
        Assert.True(Directory.Exists(root["/var/lib/kintsugi/6.1.0-56-cloud-amd64"]));

        // Purge: nothing of it stays, not even what `agent enroll` wrote beside agent.conf.
        foreach (var enrolled in new[] { "/etc/kintsugi/token", "/etc/kintsugi/server-ca.pem" })
            File.WriteAllText(root[enrolled], "written by agent enroll\n");
        await root.SucceedAsync("dpkg", "-P", "kintsugi");
        Assert.False(Directory.Exists(root["/etc/kintsugi"]));
        Assert.False(Directory.Exists(root["/var/lib/kintsugi"]));
        Assert.Null(new FileInfo(root["/etc/systemd/system/multi-user.target.wants/kintsugi-kernel.service"])
            .LinkTarget);
    }

    [DebianPackageFact]
    public async Task
        The_server_package_creates_its_user_and_data_directory_runs_without_a_runtime_and_purges_its_data()
    {
        using var root = await DebianRoot.CreateAsync();
        await root.SucceedAsync("dpkg", "-i", root.Put(packages.Server(1)));
        Assert.StartsWith("kintsugi-server:", await root.SucceedAsync("getent", "passwd", "kintsugi-server"));
        Assert.Equal("kintsugi-server kintsugi-server 750",
            (await root.SucceedAsync("stat", "-c", "%U %G %a", "/var/lib/kintsugi-server")).Trim());
        Assert.Equal("root kintsugi-server 640",
            (await root.SucceedAsync("stat", "-c", "%U %G %a", "/etc/kintsugi/server.conf")).Trim());
        Assert.Equal("/lib/systemd/system/kintsugi-server.service",
            new FileInfo(root["/etc/systemd/system/multi-user.target.wants/kintsugi-server.service"]).LinkTarget);
        // Self-contained: it starts in a root with no .NET, as its user, reading the packaged configuration.
        Assert.Equal("0.1.0", (await root.SucceedAsync("setpriv", "--reuid=kintsugi-server", "--regid=kintsugi-server",
            "--init-groups", "kintsugi-server", "version")).Trim());

        await root.SucceedAsync("dpkg", "-i", root.Put(packages.Server(2)));
        await root.SucceedAsync("dpkg", "-r", "kintsugi-server");
        Assert.True(Directory.Exists(root["/var/lib/kintsugi-server"]));
        Assert.True(File.Exists(root["/etc/kintsugi/server.conf"]));
        await root.SucceedAsync("dpkg", "-P", "kintsugi-server");
        Assert.False(Directory.Exists(root["/var/lib/kintsugi-server"]));
        Assert.False(File.Exists(root["/etc/kintsugi/server.conf"]));
    }

    [DebianPackageFact]
    public async Task The_installed_units_pass_systemd_analyze_verify_and_the_server_is_well_sandboxed()
    {
        using var root = await DebianRoot.CreateAsync();
        await root.SucceedAsync("dpkg", "-i", root.Put(packages.Agent(1)), root.Put(packages.Server(1)));
        foreach (var unit in new[] { "kintsugi-agent.service", "kintsugi-kernel.service", "kintsugi-server.service" })
        {
            var verify = await root.RunAsync("systemd-analyze", "verify", "--man=no", $"/lib/systemd/system/{unit}");
            Assert.True(verify.Succeeded && verify.StandardError.Trim().Length == 0, $"{unit}: {verify.StandardError}");
        }
        var security = await root.RunAsync("systemd-analyze", "security", "--offline=true", "--threshold=30",
            "/lib/systemd/system/kintsugi-server.service");
        Assert.True(security.Succeeded, security.StandardOutput + security.StandardError);
        Assert.Matches(@"Overall exposure level for kintsugi-server\.service: [0-2]\.\d", security.StandardOutput);
    }
}
