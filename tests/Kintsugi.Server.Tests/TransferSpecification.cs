using System.Formats.Tar;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Kintsugi.Bundles;

namespace Kintsugi.Server.Tests;

/// <summary>
/// Air-gap transfer beyond bundles: an export carries each build's signed release metadata and the revocations,
/// so an air-gapped server learns what the connected one revoked; and an import far above one bundle's size is
/// taken (spooled to disk as it arrives).
/// </summary>
public sealed class TransferSpecification
{
    private static SignedReleaseMetadata Metadata(PublisherKey key, long version, int current, int[] revoked) =>
        SignedReleaseMetadata.Create(new ReleaseMetadataDescription(Kernels.Debian61, version, current, 0, revoked,
            DateTimeOffset.UtcNow.AddDays(7)), key);

    private static async Task<JsonElement> ImportAsync(TestServer server, byte[] archive)
    {
        var response = await server.Admin.PostAsync("/api/v1/import", new ByteArrayContent(archive)
        { Headers = { ContentType = new MediaTypeHeaderValue("application/x-tar") } });
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"import: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    private static async Task<JsonElement> ReleaseAsync(TestServer server, int level) =>
        (await server.GetJsonAsync("/api/v1/releases")).EnumerateArray()
        .Single(r => r.GetProperty("level").GetInt32() == level);

    private static bool Revoked(JsonElement release) =>
        release.TryGetProperty("revoked", out var r) && r.ValueKind != JsonValueKind.Null;

    [Fact]
    public async Task An_export_carries_signed_metadata_and_revocations_and_an_import_applies_them()
    {
        await using var source = await TestServer.StartAsync();
        foreach (var level in new[] { 1, 2, 3 })
            await source.PublishAsync(Kernels.Bundle(source.Publisher, Kernels.Debian61, level));
        await using var airGapped = await TestServer.StartAsync();
        (await airGapped.PostJsonAsync("/api/v1/keys", new { pem = source.Publisher.PublicKey.ExportPem() }))
            .EnsureSuccessStatusCode();
        Assert.Equal(3, (await ImportAsync(airGapped, await source.Admin.GetByteArrayAsync("/api/v1/export")))
            .GetProperty("imported").GetInt32());

        // Later, on the connected server: level 3 is revoked by hand, and the publisher's metadata revokes level 1.
        var level3 = (await ReleaseAsync(source, 3)).GetProperty("id").GetString();
        (await source.PostJsonAsync($"/api/v1/releases/{level3}/revoke", new { reason = "regression in 3" }))
            .EnsureSuccessStatusCode();
        var metadata = Metadata(source.Publisher, 1, current: 2, revoked: [1]);
        (await source.PostJsonAsync("/api/v1/metadata", new { metadata = metadata.Text })).EnsureSuccessStatusCode();
        var archive = await source.Admin.GetByteArrayAsync("/api/v1/export");

        var result = await ImportAsync(airGapped, archive);
        Assert.Equal(1, result.GetProperty("revoked").GetInt32());
        var stored = Assert.Single(result.GetProperty("metadata").EnumerateArray());
        Assert.True(stored.GetProperty("stored").GetBoolean(), stored.ToString());
        Assert.True(Revoked(await ReleaseAsync(airGapped, 1)), "level 1, revoked by the signed metadata");
        Assert.False(Revoked(await ReleaseAsync(airGapped, 2)));
        var three = await ReleaseAsync(airGapped, 3);
        Assert.Contains("regression in 3", three.GetProperty("revoked").GetProperty("reason").GetString());
        var kept = await airGapped.GetJsonAsync($"/api/v1/metadata/{Kernels.Debian61.BuildId}");
        Assert.Equal(1, kept.GetProperty("version").GetInt64());

        // The same archive again changes nothing; metadata only moves forward.
        var again = await ImportAsync(airGapped, archive);
        Assert.Equal(0, again.GetProperty("revoked").GetInt32());
        Assert.False(Assert.Single(again.GetProperty("metadata").EnumerateArray()).GetProperty("stored").GetBoolean());
        Assert.True((await airGapped.VerifyAuditAsync()).Intact);
    }

    [Fact]
    public async Task A_200_MiB_import_is_taken_whole()
    {
        await using var source = await TestServer.StartAsync();
        await using var airGapped = await TestServer.StartAsync();
        (await airGapped.PostJsonAsync("/api/v1/keys", new { pem = source.Publisher.PublicKey.ExportPem() }))
            .EnsureSuccessStatusCode();
        // Four 52 MiB bundles: each within a bundle's limit, together above 200 MiB. Written as an export is, to a
        // file.
        var archive = Path.Combine(source.Options.DataDirectory, "big-export.tar");
        var bundles = new List<(int Level, string Digest)>();
        await using (var file = File.Create(archive))
        await using (var tar = new TarWriter(file, TarEntryFormat.Pax, leaveOpen: false))
        {
            var module = new byte[52 * 1024 * 1024];
            for (var level = 1; level <= 4; level++)
            {
                Random.Shared.NextBytes(module);
                var bundle = Kintsugi.Bundles.Bundle.Create(module, new BundleDescription
                {
                    Target = Kernels.Debian61,
                    CumulativeLevel = level,
                    Fixes =
                        [new BundleFix($"fix-{level}", [], "big")],
                    PatchedFunctions = [new PatchedFunction("vmlinux", $"function_{level}")],
                    CreatedAt =
                    DateTimeOffset.UtcNow,
                    BuilderVersion = "0.1.0",
                    EffectivePackageVersion = null,
                }, source.Publisher).ToArray();
                var digest = Sha256Digest.Of(bundle).ToString();
                bundles.Add((level, digest));
                tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile,
                    $"bundles/{digest}")
                { DataStream = new MemoryStream(bundle) });
            }
            var index = new ExportIndex(Api.TransferApi.Format, "test", DateTimeOffset.UtcNow,
                [.. bundles.Select(b =>
                new ExportedRelease($"r_{b.Level}", Kernels.Debian61.Release.Value, Kernels.Debian61.BuildId.ToString(),
                    b.Level, b.Digest, 0, ["canary"]))]);
            tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, Api.TransferApi.IndexName)
            {
                DataStream = new MemoryStream(
                    JsonSerializer.SerializeToUtf8Bytes(index, OperatorJson.Default.ExportIndex))
            });
        }
        Assert.True(new FileInfo(archive).Length > 200L * 1024 * 1024);

        await using var stream = File.OpenRead(archive);
        using var content =
            new StreamContent(stream) { Headers = { ContentType = new MediaTypeHeaderValue("application/x-tar") } };
        using var http = airGapped.Client(airGapped.AdminToken);
        http.Timeout = TimeSpan.FromMinutes(10);
        var response = await http.PostAsync("/api/v1/import", content);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode} {body}");
        Assert.Equal(4, JsonDocument.Parse(body).RootElement.GetProperty("imported").GetInt32());
        Assert.Empty(Directory.EnumerateDirectories(airGapped.Options.DataDirectory, "import-*"));
    }
}
