using System.Net;
using System.Net.Sockets;

namespace Kintsugi.Testing;

/// <summary>Loopback ports for the servers a test starts.</summary>
public static class Ports
{
    /// <summary>A TCP port free on the loopback when asked (the system's choice), for a server started next.</summary>
    public static int Free()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
