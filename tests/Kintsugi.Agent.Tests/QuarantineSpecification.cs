using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Protocol;

namespace Kintsugi.Agent.Tests;

/// <summary>Quarantine follows the module, not the bundle that carried it.</summary>
public sealed class QuarantineSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly FakeServer _server = new();
    private readonly HttpClient _http = new();
    private readonly PublisherKey _key = PublisherKey.Generate();

    public QuarantineSpecification() => TrustStore.Open(_dir["trust"]).Add(_key.PublicKey);

    public void Dispose()
    {
        _key.Dispose();
        _http.Dispose();
        _server.Dispose();
        _dir.Dispose();
    }

    private MachinePaths Paths => new(_dir["state"], _dir["etc"], _dir["run"], _dir["systemd"]);

    [Fact]
    public async Task A_re_signed_bundle_of_a_quarantined_module_stays_quarantined()
    {
        var module = File.ReadAllBytes("/bin/true");
        var running = new KernelTarget(RunningKernel.Release, null, RunningKernel.BuildId!.Value);
        // Level 2's module crashed the kernel and was quarantined; the publisher re-signs the same module (a rotation)
        // as level 3.
        var store = new PatchStore(Paths, RunningKernel.Release);
        Directory.CreateDirectory(store.Directory);
        File.WriteAllBytes(store.ModulePath(ModuleName.Parse("kintsugi_crashing")), module);
        var first = Bundle.Create(module, Inputs.Description(running, 2), _key).ToArray();
        store.Save(new InstalledPatch("kintsugi_crashing", Sha256Digest.Of(module).ToString(), 1, DateTimeOffset.UtcNow,
            BootState.Quarantined,
            Note: "kernel problems after load: Oops: 0000 [#1] PREEMPT SMP NOPTI",
            Origin: new PatchOrigin(Sha256Digest.Of(first).ToString(), 2, _key.Id.ToString(), ["CVE-2024-1086"], [],
            null)));
        var resigned = Bundle.Create(module, Inputs.Description(running, 3), _key).ToArray();
        var digest = Sha256Digest.Of(resigned);
        _server.Handler = r => r.PathAndQuery switch
        {
            ProtocolPaths.Enroll => new(201, new EnrollResponse("m_1", "kmc_1", 3600, 30)),
            ProtocolPaths.CheckIn => new(200, new CheckInResponse(CheckInAction.Apply,
            new ReleaseOffer(3, digest, resigned.Length, ProtocolPaths.Bundle(digest)), 3600, 30, 1)),
            var path when path == ProtocolPaths.Bundle(digest) => new(200, resigned, "application/octet-stream"),
            _ => new(404),
        };

        var result = await new MachineAgent(new AgentConfig
        {
            Server = _server.Address,
            EnrollmentToken = "ket_token",
            TrustStore = _dir["trust"],
            Settle = TimeSpan.Zero
        },
            Paths, _ => { }, _http).RunOnceAsync(default);

        Assert.Equal(ExitCode.TransitionFailed, result.ExitCode);
        Assert.Contains("kintsugi_crashing, which is quarantined", result.Detail);
        Assert.False(Directory.Exists(Path.Combine(_dir["state"], "agent", "incoming"))
            && Directory.EnumerateFiles(Path.Combine(_dir["state"], "agent", "incoming")).Any());
    }
}
