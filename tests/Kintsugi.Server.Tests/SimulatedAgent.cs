using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Kintsugi.Bundles;
using Kintsugi.Protocol;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>
/// A machine speaking docs/protocol.md: enrolls, checks in with what it "runs", downloads and checks what it
/// is offered (digest, signature, exact build-id) exactly as the real agent must, and long-polls events.
/// </summary>
public sealed class SimulatedAgent(TestServer server, KernelTarget kernel, string hostname)
{
    public string MachineId { get; init; } = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    /// <summary>The kernel's boot id it reports (null: an agent older than the field).</summary>
    public string? BootId { get; set; }

    /// <summary>What it reports about its release metadata (null: an agent older than the field).</summary>
    public MetadataReport? MetadataReport { get; set; }
    public string? Machine { get; private set; }
    public string? Credential { get; private set; }
    public int? Level { get; private set; }
    public Sha256Digest? Bundle { get; private set; }
    public PatchState State { get; set; } = PatchState.NothingToApply;
    public long Epoch { get; private set; }
    public KernelTarget Kernel { get; } = kernel;
    public HttpClient Http { get; private set; } = server.Client();

    /// <summary>Enrolls; an agent that holds a credential proves with it that it is the machine enrolled under its
    /// machine-id.</summary>
    public async Task<HttpResponseMessage> TryEnrollAsync(string token, bool proveWithCredential = true)
    {
        var request = new EnrollRequest(token, hostname, MachineId,
            new KernelIdentity(Kernel.Release, Kernel.BuildId, Kernel.PackageVersion), "0.1.0",
            proveWithCredential ? Credential : null);
        var response = await Http.PostAsJsonAsync(ProtocolPaths.Enroll, request, ProtocolJson.Default.EnrollRequest);
        if (response.StatusCode == HttpStatusCode.Created)
        {
            var enrolled = (await response.Content.ReadFromJsonAsync(ProtocolJson.Default.EnrollResponse))!;
            Machine = enrolled.Machine;
            Credential = enrolled.Credential;
            Http = server.Client(Credential);
        }
        return response;
    }

    public async Task EnrollAsync(string token)
    {
        var response = await TryEnrollAsync(token);
        Assert.True(response.StatusCode == HttpStatusCode.Created,
            $"enroll: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    public async Task<CheckInResponse> CheckInAsync()
    {
        var request = new CheckInRequest(new KernelIdentity(Kernel.Release, Kernel.BuildId), State, Level, Bundle, null,
            0, null, "0.1.0", MetadataReport, BootId);
        var response = await Http.PostAsJsonAsync(ProtocolPaths.CheckIn, request, ProtocolJson.Default.CheckInRequest);
        Assert.True(response.IsSuccessStatusCode,
            $"check-in: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        var answer = (await response.Content.ReadFromJsonAsync(ProtocolJson.Default.CheckInResponse))!;
        Epoch = Math.Max(Epoch, answer.Epoch);
        return answer;
    }

    /// <summary>One agent cycle: check in, do what the server says (verifying the bundle), report the
    /// outcome.</summary>
    public async Task<CheckInAction> SyncAsync(PublisherPublicKey trusted)
    {
        var answer = await CheckInAsync();
        switch (answer.Action)
        {
            case CheckInAction.Apply:
                var bytes = await Http.GetByteArrayAsync(answer.Release!.Url);
                Assert.Equal(answer.Release.Bundle, Sha256Digest.Of(bytes));
                using (var directory = new TemporaryDirectory())
                {
                    var store = TrustStore.Open(directory.Path);
                    store.Add(trusted);
                    BundleVerifier.Verify(Kintsugi.Bundles.Bundle.Read(bytes), store, Kernel);
                }
                State = PatchState.Applying; await CheckInAsync();
                Level = answer.Release.Level; Bundle = answer.Release.Bundle; State = PatchState.Applied;
                await CheckInAsync();
                break;
            case CheckInAction.Remove:
                Level = null; Bundle = null; State = PatchState.Revoked;
                await CheckInAsync();
                break;
        }
        return answer.Action;
    }

    public async Task<long> WaitForEventAsync(CancellationToken cancellation = default)
    {
        var response = await Http.GetAsync(ProtocolPaths.EventsAfter(Epoch), cancellation);
        response.EnsureSuccessStatusCode();
        var events = (await response.Content.ReadFromJsonAsync(ProtocolJson.Default.EventsResponse, cancellation))!;
        var moved = events.Epoch > Epoch;
        Epoch = events.Epoch;
        return moved ? events.Epoch : -1;
    }

    public void UseCredential(string credential) => Http = server.Client(credential);
}
