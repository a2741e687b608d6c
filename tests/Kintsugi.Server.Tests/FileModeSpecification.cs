using System.Diagnostics;
using System.Text.RegularExpressions;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>
/// The server's secrets (its data directory, the TLS private key, the timestamp key, the first admin token) are
/// its owner's only from the moment they exist: read from the system calls of a real first start under strace,
/// every directory it makes is made 0700 and every secret file opened 0600, and nothing is chmod-ed after the fact.
/// </summary>
public sealed partial class FileModeSpecification
{
    [Fact]
    public async Task A_first_start_creates_the_servers_secrets_owner_only_and_never_chmods_them()
    {
        using var parent = new TemporaryDirectory();
        var data = parent["data"];
        var trace = parent["strace.log"];
        var start = new ProcessStartInfo("strace") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-ff", "-qq", "-o", trace, "-e",
            "trace=openat,open,creat,mkdir,mkdirat,chmod,fchmod,fchmodat",
            Repository.KintsugiBinary, "server", "run", "--data", data, "--listen",
            $"https://127.0.0.1:{Ports.Free()}" })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new System.Text.StringBuilder();
        void Line(string? line)
        {
            if (line is null) return;
            lock (output) output.AppendLine(line);
            if (line.EndsWith("kintsugi-server: ready", StringComparison.Ordinal)) ready.TrySetResult();
        }
        process.OutputDataReceived += (_, e) => Line(e.Data);
        process.ErrorDataReceived += (_, e) => Line(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            var first =
                await Task.WhenAny(ready.Task, process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(120)));
            lock (output) Assert.True(first == ready.Task, $"the server did not become ready:\n{output}");
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }

        // -ff: one file per thread (trace.TID), so no call is split across lines by another thread's.
        var calls = Directory.EnumerateFiles(parent.Path, "strace.log.*").SelectMany(File.ReadAllLines)
            .Where(l => l.Contains($"\"{data}", StringComparison.Ordinal)).ToList();
        var secrets = new[] { ServerApp.AdminTokenFile, "tls/server.pfx", "keys/timestamp.pem" }.Select(f =>
            Path.Combine(data, f)).ToList();
        foreach (var secret in secrets) Assert.True(File.Exists(secret), $"{secret} was not made");

        var directories = calls.Select(l => MkdirCall().Match(l)).Where(m => m.Success).ToList();
        foreach (var directory in new[] { data, Path.Combine(data, "tls"), Path.Combine(data, "keys") })
            Assert.Contains(directories, m => m.Groups["path"].Value == directory);
        Assert.All(directories, m =>
            Assert.True(m.Groups["mode"].Value == "0700", $"made {m.Groups["mode"].Value}: {m.Value}"));

        var created = calls.Select(l => CreatingOpen().Match(l)).Where(m => m.Success
            && secrets.Any(s => m.Groups["path"].Value.StartsWith(s, StringComparison.Ordinal))).ToList();
        foreach (var secret in secrets)
            Assert.Contains(created, m => m.Groups["path"].Value.StartsWith(secret, StringComparison.Ordinal));
        Assert.All(created, m =>
            Assert.True(m.Groups["mode"].Value == "0600", $"created {m.Groups["mode"].Value}: {m.Value}"));

        Assert.DoesNotContain(calls, l => ChmodCall().IsMatch(l));
    }

    [GeneratedRegex("""mkdir(?:at)?\((?:AT_FDCWD, )?"(?<path>[^"]+)", (?<mode>0[0-7]+)\) = 0$""")]
    private static partial Regex MkdirCall();

    [GeneratedRegex(
        """open(?:at)?\((?:AT_FDCWD, )?"(?<path>[^"]+)", [A-Z_|]*O_CREAT[A-Z_|]*, (?<mode>0[0-7]+)\) = [0-9]+$""")]
    private static partial Regex CreatingOpen();

    [GeneratedRegex("""\b(?:f?chmod|fchmodat)\(""")]
    private static partial Regex ChmodCall();
}
