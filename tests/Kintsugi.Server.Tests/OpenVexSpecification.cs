using System.Text.Json;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>The fleet's OpenVEX document: fixed where the applied level fixes the CVE, affected (with what to do) where
/// it does not yet.</summary>
public sealed class OpenVexSpecification
{
    [Fact]
    public async Task The_fleet_document_says_fixed_on_patched_machines_and_affected_on_exposed_ones()
    {
        await using var fleet = await ThreeMachineFleet.StartAsync();
        var server = fleet.Server;

        using var response = await server.Admin.GetAsync("/api/v1/reports/openvex");
        Assert.Equal("application/vnd.openvex+json", response.Content.Headers.ContentType?.MediaType);
        var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Empty(OpenVexRules.Problems(document));
        Assert.Equal("https://openvex.dev/ns/v0.2.0", document.GetProperty("@context").GetString());

        var statements = document.GetProperty("statements").EnumerateArray().ToList();
        Assert.All(statements, s =>
            Assert.Equal("CVE-2024-1086", s.GetProperty("vulnerability").GetProperty("name").GetString()));
        var fixedOn =
            Assert.Single(statements, s => s.GetProperty("status").GetString() == "fixed").GetProperty("products");
        var affected = Assert.Single(statements, s => s.GetProperty("status").GetString() == "affected");
        Assert.Contains("level 1", affected.GetProperty("action_statement").GetString());
        Assert.Equal(1, fixedOn.GetArrayLength());
        Assert.Equal(1, affected.GetProperty("products").GetArrayLength());
        Assert.StartsWith($"pkg:deb/debian/linux-image-{Kernels.Debian61.Release}",
            fixedOn[0].GetProperty("identifiers").GetProperty("purl").GetString());
        // The machine on another kernel has no fix for its build: the document says nothing of it.
        Assert.DoesNotContain(statements.SelectMany(s => s.GetProperty("products").EnumerateArray()), p =>
            p.GetProperty("@id").GetString()!.Contains(fleet.OtherKernel.Machine ?? "none"));

        await fleet.PatchExposedAsync();
        var after = JsonDocument.Parse(await server.Admin.GetStringAsync("/api/v1/reports/openvex")).RootElement;
        var only = Assert.Single(after.GetProperty("statements").EnumerateArray());
        Assert.Equal("fixed", only.GetProperty("status").GetString());
        Assert.Equal(2, only.GetProperty("products").GetArrayLength());
        Assert.NotEqual(document.GetProperty("@id").GetString(), after.GetProperty("@id").GetString());
    }

    [Fact]
    public async Task The_fleet_document_needs_the_auditor_role()
    {
        await using var server = await TestServer.StartAsync();
        Assert.Equal(System.Net.HttpStatusCode.Unauthorized,
            (await server.Client().GetAsync("/api/v1/reports/openvex")).StatusCode);
    }
}
