using System.Diagnostics;
using System.Text;

namespace Kintsugi.Testing;

/// <summary>
/// A real patch server started the way an operator starts one: <c>kintsugi server run</c> with the published
/// <c>kintsugi</c> binary, which finds <c>kintsugi-server</c> beside itself, on PATH or at $KINTSUGI_SERVER_BINARY
/// (for replicas and for the lab: listening on 0.0.0.0:PORT, so a QEMU guest reaches it at https://10.0.2.2:PORT
/// with the generated tls/server.crt), or a package's own <c>kintsugi-server run</c>. Ready when the server prints
/// "ready"; the first admin token is read from the data directory.
/// </summary>
public sealed class ServerProcess : IAsyncDisposable
{
    /// <summary>The first admin token's file in a fresh server's data directory (ServerApp.AdminTokenFile).</summary>
    public const string AdminTokenFileName = "initial-admin-token";

    private readonly Process _process;
    private readonly StringBuilder _log = new();

    public string DataDirectory { get; }
    public int Port { get; }
    public string Url { get; }
    /// <summary>The server as a lab guest reaches it (QEMU's user network maps 10.0.2.2 to the host).</summary>
    public string GuestUrl => $"{new Uri(Url).Scheme}://10.0.2.2:{Port}";
    /// <summary>The certificate the server generated for https, to pin.</summary>
    public string Certificate => Path.Combine(DataDirectory, "tls", "server.crt");
    public string AdminTokenFile => Path.Combine(DataDirectory, AdminTokenFileName);
    public string AdminToken { get; private set; } = "";
    public string Log { get { lock (_log) return _log.ToString(); } }

    private ServerProcess(Process process, string dataDirectory, int port, string url)
    {
        _process = process;
        DataDirectory = dataDirectory;
        Port = port;
        Url = url;
    }

    /// <summary><c>kintsugi server run</c> with the repository's published binary.</summary>
    public static Task<ServerProcess> StartAsync(int port = 0, string? postgres = null,
        string? dataDirectory = null, bool https = true, string host = "0.0.0.0", params string[] extra)
    {
        if (port == 0) port = Ports.Free();
        dataDirectory ??= Directory.CreateTempSubdirectory("kintsugi-server-process-").FullName;
        var scheme = https ? "https" : "http";
        var arguments = new List<string> { "server", "run", "--data", dataDirectory, "--listen",
            $"{scheme}://{host}:{port}", "--epoch-poll-ms", "200" };
        if (postgres is not null) arguments.AddRange(["--postgres", postgres]);
        arguments.AddRange(extra);
        return StartAsync(Repository.KintsugiBinary, arguments, dataDirectory, port, $"{scheme}://127.0.0.1:{port}",
            TimeSpan.FromSeconds(60));
    }

    /// <summary>A package's <c>kintsugi-server</c> (unpacked from the .deb) on a free loopback port, over https.
    /// </summary>
    public static Task<ServerProcess> StartPackagedAsync(string serverBinary, string dataDirectory)
    {
        var port = Ports.Free();
        return StartAsync(serverBinary, ["run", "--data", dataDirectory, "--listen", $"https://127.0.0.1:{port}"],
            dataDirectory, port, $"https://127.0.0.1:{port}", TimeSpan.FromMinutes(3));
    }

    private static async Task<ServerProcess> StartAsync(string binary, IEnumerable<string> arguments,
        string dataDirectory, int port, string url, TimeSpan readyWithin)
    {
        var start = new ProcessStartInfo(binary)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true
        };
        foreach (var a in arguments) start.ArgumentList.Add(a);
        var process = Process.Start(start)!;
        var server = new ServerProcess(process, dataDirectory, port, url);
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Line(string? line)
        {
            if (line is null) return;
            lock (server._log) server._log.AppendLine(line);
            if (line.EndsWith("kintsugi-server: ready", StringComparison.Ordinal)) ready.TrySetResult();
        }
        process.ErrorDataReceived += (_, e) => Line(e.Data);
        process.OutputDataReceived += (_, e) => Line(e.Data);
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        var exited = process.WaitForExitAsync();
        if (await Task.WhenAny(ready.Task, exited, Task.Delay(readyWithin)) != ready.Task)
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"kintsugi-server did not become ready:\n{server.Log}");
        }
        if (File.Exists(server.AdminTokenFile))
            server.AdminToken = (await File.ReadAllTextAsync(server.AdminTokenFile)).Trim();
        return server;
    }

    /// <summary>
    /// The published <c>kintsugi-server</c> executable, for its direct commands (<c>audit verify</c>), found as
    /// <c>kintsugi server run</c> finds it: $KINTSUGI_SERVER_BINARY, beside the kintsugi binary, or on PATH.
    /// </summary>
    public static string Binary =>
        Environment.GetEnvironmentVariable("KINTSUGI_SERVER_BINARY") is { Length: > 0 } configured ? configured
        : new[] { Path.GetDirectoryName(Repository.KintsugiBinary)! }.Concat(
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            .Select(d => Path.Combine(d, "kintsugi-server")).FirstOrDefault(File.Exists)
          ?? throw new InvalidOperationException($"kintsugi-server is not beside {Repository.KintsugiBinary} nor on " +
          $"PATH; ./kintsugi publishes both");

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
