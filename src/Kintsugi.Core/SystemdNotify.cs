using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Kintsugi;

/// <summary>
/// The sd_notify protocol (systemd's <c>Type=notify</c>): datagrams such as <c>READY=1</c>, <c>WATCHDOG=1</c>,
/// <c>STATUS=...</c> and <c>STOPPING=1</c> sent to the unix socket named by <c>$NOTIFY_SOCKET</c>. Outside
/// systemd (no socket) every call does nothing, so the same binary runs from a shell.
/// </summary>
public sealed class SystemdNotify
{
    private readonly string? _socket;
    private readonly TimeSpan? _watchdog;

    public SystemdNotify(IReadOnlyDictionary<string, string?> environment, int processId)
    {
        _socket = environment.GetValueOrDefault("NOTIFY_SOCKET") is { Length: > 0 } socket ? socket : null;
        // WATCHDOG_PID, when set, names the process systemd expects the pings from (not a child's).
        var pidMatches = environment.GetValueOrDefault("WATCHDOG_PID") is not { Length: > 0 } pid ||
            int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out var expected)
            && expected == processId;
        if (pidMatches && long.TryParse(environment.GetValueOrDefault("WATCHDOG_USEC"), NumberStyles.None,
            CultureInfo.InvariantCulture, out var usec) && usec > 0)
            _watchdog = TimeSpan.FromMicroseconds(usec);
    }

    /// <summary>This process's notifier, from its environment.</summary>
    public static SystemdNotify FromEnvironment() => new(
        Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
        .ToDictionary(e => (string)e.Key, e => (string?)e.Value),
        Environment.ProcessId);

    public bool Enabled => _socket is not null;

    /// <summary>The watchdog timeout systemd set (<c>WatchdogSec=</c>), or null when there is none.</summary>
    public TimeSpan? WatchdogTimeout => _watchdog;

    public void Ready(string status) => Send($"READY=1\nSTATUS={OneLine(status)}");

    public void Status(string status) => Send($"STATUS={OneLine(status)}");

    public void Watchdog() => Send("WATCHDOG=1");

    public void Stopping() => Send("STOPPING=1");

    /// <summary>Sends one notification; an unreachable socket is not the service's failure (systemd may be
    /// restarting).</summary>
    public void Send(string message)
    {
        if (_socket is null) return;
        // A leading '@' names a socket in the abstract namespace.
        var path = _socket[0] == '@' ? "\0" + _socket[1..] : _socket;
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.Connect(new UnixDomainSocketEndPoint(path));
            socket.Send(Encoding.UTF8.GetBytes(message));
        }
        catch (SocketException) { }
    }

    /// <summary>
    /// Pings the watchdog at half its timeout while <paramref name="alive"/> says the service still makes
    /// progress; a hung service stops pinging and systemd restarts it.
    /// </summary>
    public async Task RunWatchdogAsync(Func<bool> alive, CancellationToken cancellation)
    {
        if (_socket is null || _watchdog is not { } timeout) return;
        using var timer = new PeriodicTimer(timeout / 2);
        try
        {
            do { if (alive()) Watchdog(); }
            while (await timer.WaitForNextTickAsync(cancellation));
        }
        catch (OperationCanceledException) { }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");
}
