using System.Diagnostics;
using System.Text;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>
/// A real patch server started the way an operator starts one, <c>kintsugi server run</c> with the published
/// <c>kintsugi</c> binary, which finds <c>kintsugi-server</c> beside itself, on PATH or at
/// $KINTSUGI_SERVER_BINARY (for replicas and for the lab: listening on 0.0.0.0:PORT, so a QEMU guest reaches
/// it at https://10.0.2.2:PORT with the generated tls/server.crt). Ready when the server prints "ready"; the
/// first admin token is read from the data directory.
/// </summary>
public sealed class ServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();

    public string DataDirectory { get; }
    public int Port { get; }
    public string Url { get; }
    public string AdminToken { get; private set; } = "";
    public string Log { get { lock (_log) return _log.ToString(); } }

    private ServerProcess(Process process, string dataDirectory, int port, string url)
    {
        _process = process;
        DataDirectory = dataDirectory;
        Port = port;
        Url = url;
    }

    public static async Task<ServerProcess> StartAsync(int port = 0, string? postgres = null,
        string? dataDirectory = null, bool https = true, string host = "0.0.0.0", params string[] extra)
    {
        if (port == 0) port = Ports.Free();
        dataDirectory ??= Directory.CreateTempSubdirectory("kintsugi-server-process-").FullName;
        var scheme = https ? "https" : "http";
        var start = new ProcessStartInfo(Repository.KintsugiBinary)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true
        };
        foreach (var a in new[] { "server", "run", "--data", dataDirectory, "--listen", $"{scheme}://{host}:{port}",
            "--epoch-poll-ms", "200" }
            .Concat(postgres is null ? [] : ["--postgres", postgres]).Concat(extra))
            start.ArgumentList.Add(a);
        var process = Process.Start(start)!;
        var server = new ServerProcess(process, dataDirectory, port, $"{scheme}://127.0.0.1:{port}");
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
        if (await Task.WhenAny(ready.Task, exited, Task.Delay(TimeSpan.FromSeconds(60))) != ready.Task)
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"kintsugi-server did not become ready:\n{server.Log}");
        }
        var tokenFile = Path.Combine(dataDirectory, ServerApp.AdminTokenFile);
        if (File.Exists(tokenFile)) server.AdminToken = (await File.ReadAllTextAsync(tokenFile)).Trim();
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
