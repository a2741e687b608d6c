using Kintsugi.Bundles;

namespace Kintsugi.Server.Tests;

/// <summary>
/// A server with level 1 of Debian 6.1 fixing CVE-2024-1086 (high) and three enrolled machines: <see cref="Patched"/>
/// runs it, <see cref="Exposed"/> has the same kernel but has not applied it, <see cref="OtherKernel"/> runs a kernel
/// with no release. The shape the exposure, compliance and OpenVEX reports are judged on.
/// </summary>
public sealed class ThreeMachineFleet : IAsyncDisposable
{
    public const string Cve = "CVE-2024-1086";

    public required TestServer Server { get; init; }
    public required SimulatedAgent Patched { get; init; }
    public required SimulatedAgent Exposed { get; init; }
    public required SimulatedAgent OtherKernel { get; init; }

    public static async Task<ThreeMachineFleet> StartAsync()
    {
        var server = await TestServer.StartAsync();
        await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1, (Cve, CveSeverity.High)));
        var token = await server.EnrollmentTokenAsync();
        var fleet = new ThreeMachineFleet
        {
            Server = server,
            Patched = new SimulatedAgent(server, Kernels.Debian61, "patched"),
            Exposed = new SimulatedAgent(server, Kernels.Debian61, "exposed"),
            OtherKernel = new SimulatedAgent(server, Kernels.Debian612, "other"),
        };
        foreach (var agent in new[] { fleet.Patched, fleet.Exposed, fleet.OtherKernel })
        {
            await agent.EnrollAsync(token);
            await agent.CheckInAsync();
        }
        await fleet.Patched.SyncAsync(server.Publisher.PublicKey);
        return fleet;
    }

    /// <summary>The exposed machine applies the fix too.</summary>
    public Task PatchExposedAsync() => Exposed.SyncAsync(Server.Publisher.PublicKey);

    public ValueTask DisposeAsync() => Server.DisposeAsync();
}
