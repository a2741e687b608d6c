using System.Formats.Tar;
using System.Text.Json;
using Kintsugi.Agent;
using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Testing;
using Kintsugi.User;

namespace Kintsugi.Server.Tests;

/// <summary>
/// Air-gapped delivery of a user-space patch, end to end: user-space releases of a real program and the publisher's
/// signed metadata for the object, exported with the operator's <c>kintsugi server export</c> from one real server and
/// imported with <c>kintsugi server import</c> into another; each server names the object as an object (never as a
/// kernel release); the revocation the metadata states travels; and an agent of the air-gapped server patches a
/// running process with the imported release.
/// </summary>
public sealed class UserSpaceTransferSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly LoopProgram _loop;

    public UserSpaceTransferSpecification() => _loop = new LoopProgram(_dir.Path);

    public void Dispose()
    {
        _loop.Dispose();
        _dir.Dispose();
    }

    private string PathOf(string name) => _dir.File(name);

    private static byte[] UserBundle(PublisherKey key, UserPatch patch, byte[] patchBytes, int level) =>
        Bundle.Create(patchBytes, new BundleDescription
        {
            Object = new ObjectTarget(patch.Target.Object, patch.Target.BuildId, "loop-tools", "1.0-1"),
            CumulativeLevel = level,
            Fixes = [new BundleFix($"loop-compute-{level}", [new CveReference(CveId.Parse("CVE-2099-41002"),
                CveSeverity.High, new DateOnly(2099, 1, 2))], "compute() returns the fixed value")],
            PatchedFunctions = [new Kintsugi.Bundles.PatchedFunction(patch.Target.Object, "compute")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        }, key).ToArray();

    /// <summary>The operator's <c>kintsugi server ...</c> against a test server, with its admin token and pinned
    /// certificate; fails the test on a non-zero exit.</summary>
    private static string Operator(TestServer server, params string[] args)
    {
        var (code, output) = OperatorCli.Run(server.BaseAddress.ToString().TrimEnd('/'), server.AdminToken,
            Path.Combine(server.Options.DataDirectory, "tls", "server.crt"), args);
        Assert.True(code == 0, $"kintsugi server {string.Join(' ', args)}: exit {code}\n{output}");
        return output;
    }

    private static async Task<JsonElement> ReleaseAsync(TestServer server, int level) =>
        (await server.GetJsonAsync("/api/v1/releases")).EnumerateArray()
        .Single(r => r.GetProperty("level").GetInt32() == level);

    /// <summary>Kind, kernel release and object as the reply states them (JSON null as null).</summary>
    private static (string?, string?, string?) Identity(JsonElement view) =>
        (view.GetProperty("kind").GetString(), view.GetProperty("kernelRelease").GetString(),
        view.GetProperty("object").GetString());

    private static JsonElement ExportIndex(string archive)
    {
        using var reader = new TarReader(File.OpenRead(archive));
        while (reader.GetNextEntry() is { } entry)
            if (entry.Name == Api.TransferApi.IndexName)
                return JsonDocument.Parse(entry.DataStream!).RootElement.Clone();
        throw new InvalidDataException($"{archive} has no {Api.TransferApi.IndexName}");
    }

    [Fact]
    public async Task
        A_user_space_release_and_its_object_metadata_travel_to_an_air_gapped_server_whose_agent_applies_it()
    {
        var (patch, patchBytes) = _loop.Patch("loop-compute-fix");
        var build = patch.Target.BuildId.ToString();
        await using var source = await TestServer.StartAsync();
        foreach (var level in new[] { 1, 2 })
            await source.PublishAsync(UserBundle(source.Publisher, patch, patchBytes, level));
        Assert.Equal(("user", null, "loop"), Identity(await ReleaseAsync(source, 1)));
        var listed = Operator(source, "releases");
        Assert.Contains("target", listed);
        Assert.Contains("loop (user space)", listed);

        await using var airGapped = await TestServer.StartAsync();
        Operator(airGapped, "trust", "add", WritePem(source.Publisher));
        var first = PathOf("first.tar");
        Operator(source, "export", "-o", first);
        var exported = ExportIndex(first).GetProperty("releases").EnumerateArray().ToList();
        Assert.Equal(2, exported.Count);
        Assert.All(exported, r => Assert.Equal(("user", null, "loop"), Identity(r)));
        Assert.Contains("imported 2, already present 0, refused 0", Operator(airGapped, "import", first));

        // Later, on the connected server: the publisher's metadata for the object revokes level 2.
        var metadata = SignedReleaseMetadata.Create(new ReleaseMetadataDescription(null, 1, 2, 0, [2],
            DateTimeOffset.UtcNow.AddDays(7), new ObjectTarget("loop", patch.Target.BuildId)), source.Publisher);
        var metadataFile = PathOf("loop.metadata.json");
        await File.WriteAllTextAsync(metadataFile, metadata.Text);
        var published = Operator(source, "metadata", "publish", metadataFile);
        Assert.Contains($"release metadata version 1 for loop (user space) ({build})", published);
        Assert.Equal(("user", null, "loop"), Identity(await source.GetJsonAsync($"/api/v1/metadata/{build}")));
        var second = PathOf("second.tar");
        Operator(source, "export", "-o", second);
        var imported = Operator(airGapped, "import", "--json", second);
        using (var result = JsonDocument.Parse(imported))
        {
            var stored = Assert.Single(result.RootElement.GetProperty("metadata").EnumerateArray());
            Assert.Equal((build, true), (stored.GetProperty("buildId").GetString(), stored.GetProperty("stored")
                .GetBoolean()));
        }

        var kept = await airGapped.GetJsonAsync($"/api/v1/metadata/{build}");
        Assert.Equal(("user", null, "loop"), Identity(kept));
        Assert.Equal((1L, 2), (kept.GetProperty("version").GetInt64(), kept.GetProperty("currentLevel").GetInt32()));
        Assert.Equal(("user", null, "loop"), Identity(await ReleaseAsync(airGapped, 1)));
        Assert.Equal(JsonValueKind.Null, (await ReleaseAsync(airGapped, 1)).GetProperty("revoked").ValueKind);
        Assert.Equal(JsonValueKind.Object, (await ReleaseAsync(airGapped, 2)).GetProperty("revoked").ValueKind);

        // A machine of the air-gapped network: its agent patches the running program with the imported level 1.
        var process = _loop.Start();
        _loop.RunsOnly(process, fixedCode: false);
        TrustStore.Open(PathOf("trust")).Add(source.Publisher.PublicKey);
        var agent = new MachineAgent(new AgentConfig
        {
            Server = airGapped.BaseAddress,
            EnrollmentToken = await airGapped.EnrollmentTokenAsync(),
            ServerCertificate = Path.Combine(airGapped.Options.DataDirectory, "tls", "server.crt"),
            TrustStore = PathOf("trust"),
            Settle = TimeSpan.Zero,
        }, new MachinePaths(PathOf("state"), PathOf("etc"), PathOf("run"), PathOf("systemd")), _ => { });
        await agent.RunOnceAsync(default);
        _loop.RunsOnly(process, fixedCode: true);
        Assert.Single(UserPatcher.List(process));
        var machine = Assert.Single((await airGapped.GetJsonAsync("/api/v1/machines")).EnumerateArray())
            .GetProperty("id").GetString();
        var loop = Assert.Single((await airGapped.GetJsonAsync($"/api/v1/machines/{machine}"))
            .GetProperty("userObjects").EnumerateArray());
        Assert.Equal(("loop", "applied", 1), (loop.GetProperty("object").GetString(),
            loop.GetProperty("state").GetString(), loop.GetProperty("level").GetInt32()));
        Assert.True((await airGapped.VerifyAuditAsync()).Intact);
    }

    private string WritePem(PublisherKey key)
    {
        var path = PathOf("publisher.pem");
        File.WriteAllText(path, key.PublicKey.ExportPem());
        return path;
    }
}
