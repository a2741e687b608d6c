using System.Net;
using System.Net.Http.Headers;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>
/// The server's apt repository of the agent package: a Debian 12 root really runs apt-get against it (update,
/// install, then upgrade to a newer package), verifying the repository's own signature.
/// </summary>
public sealed class AptRepositorySpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A small but real kintsugi package, built with dpkg-deb.</summary>
    private string Package(string version, string name = "kintsugi")
    {
        var root = _dir[$"{name}-{version}"];
        Directory.CreateDirectory(Path.Combine(root, "DEBIAN"));
        Directory.CreateDirectory(Path.Combine(root, "usr", "bin"));
        File.WriteAllText(Path.Combine(root, "DEBIAN", "control"),
            $"Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: Tests " +
            $"<tests@kintsugi.invalid>\nDescription: test package\n");
        File.WriteAllText(Path.Combine(root, "usr", "bin", name), $"#!/bin/sh\necho {version}\n");
        File.SetUnixFileMode(Path.Combine(root, "usr", "bin", name), (UnixFileMode)0b111_101_101);
        var deb = _dir[$"{name}_{version}_amd64.deb"];
        var built = ExternalCommand.Run("dpkg-deb", "--root-owner-group", "--build", root, deb);
        Assert.True(built.Succeeded, built.StandardError);
        return deb;
    }

    private static async Task<HttpResponseMessage> Publish(TestServer server, string deb)
    {
        var content = new ByteArrayContent(File.ReadAllBytes(deb));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        return await server.Admin.PostAsync("/api/v1/apt/packages", content);
    }

    [Fact]
    public async Task Machines_install_and_upgrade_the_agent_with_apt_from_the_servers_signed_repository()
    {
        await using var server = await TestServer.StartAsync();
        Assert.Equal(HttpStatusCode.Created, (await Publish(server, Package("0.1.0-1"))).StatusCode);

        using var root = await DebianRoot.CreateAsync();
        Directory.CreateDirectory(root["/etc/apt/keyrings"]);
        File.WriteAllText(root["/etc/apt/keyrings/kintsugi.asc"], await server.Client().GetStringAsync("/apt/key.asc"));
        File.Copy(Path.Combine(server.Options.DataDirectory, "tls", "server.crt"),
            root["/etc/apt/kintsugi-server.crt"]);
        // Only the server's repository: the test needs no Debian mirror.
        File.WriteAllText(root["/etc/apt/sources.list"], "");
        File.WriteAllText(root["/etc/apt/sources.list.d/kintsugi.list"],
            $"deb [signed-by=/etc/apt/keyrings/kintsugi.asc] {server.BaseAddress}apt stable main\n");
        File.WriteAllText(root["/etc/apt/apt.conf.d/90kintsugi"],
            "Acquire::https::CaInfo \"/etc/apt/kintsugi-server.crt\";\n");

        await root.SucceedAsync("apt-get", "update");
        await root.SucceedAsync("apt-get", "install", "-y", "kintsugi");
        Assert.Equal("0.1.0-1", (await root.SucceedAsync("kintsugi")).Trim());

        Assert.Equal(HttpStatusCode.Created, (await Publish(server, Package("0.1.0-2"))).StatusCode);
        await root.SucceedAsync("apt-get", "update");
        await root.SucceedAsync("apt-get", "upgrade", "-y");
        Assert.Equal("0.1.0-2", (await root.SucceedAsync("kintsugi")).Trim());

        var events = await server.GetJsonAsync("/api/v1/audit");
        Assert.Contains(events.EnumerateArray(), e => e.GetProperty("action").GetString() == "apt.publish"
            && e.GetProperty("subject").GetString() == "apt:kintsugi=0.1.0-2");
    }

    [Fact]
    public async Task Only_the_agent_package_is_accepted_and_only_from_an_operator()
    {
        await using var server = await TestServer.StartAsync();
        Assert.Equal(HttpStatusCode.BadRequest, (await Publish(server, Package("1.0", name: "bash"))).StatusCode);
        var content = new ByteArrayContent(File.ReadAllBytes(Package("0.1.0-1")));
        Assert.Equal(HttpStatusCode.Unauthorized,
            (await server.Client().PostAsync("/api/v1/apt/packages", content)).StatusCode);
        // Nothing outside pool/, dists/ and the public key is served: never the signing key.
        Assert.Equal(HttpStatusCode.NotFound, (await server.Client().GetAsync("/apt/gnupg/pubring.kbx")).StatusCode);
    }
}
