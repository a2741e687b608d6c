using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Kintsugi.Testing;

namespace Kintsugi.Lab.Tests;

/// <summary>kintsugi lab run, driven through the real command line against a real Debian kernel.</summary>
[Collection("6.1 cloud kernel")]
public sealed class LabRunSpecification
{
    private static readonly string Kernel = TestKernels.Debian12Cloud61.Value;

    private static async Task<CommandResult> Kintsugi(params string[] arguments)
    {
        await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61); // fetched and cached once for the run
        return await ExternalCommand.RunAsync(Repository.KintsugiBinary, arguments);
    }

    [Fact]
    public async Task Lab_run_exits_with_the_guest_commands_status_and_streams_its_output()
    {
        var result = await Kintsugi("lab", "run", "--kernel", Kernel, "--timeout", "120", "--",
            "uname -r; echo guest-says-hello; exit 42");
        Assert.Equal(42, result.ExitCode);
        Assert.Contains(Kernel, result.StandardOutput);
        Assert.Contains("guest-says-hello", result.StandardOutput);
    }

    [Fact]
    public async Task Lab_run_copies_added_files_into_the_guest()
    {
        using var directory = new TemporaryDirectory();
        var file = directory["payload.txt"];
        await File.WriteAllTextAsync(file, "payload-from-the-host\n");
        var result = await Kintsugi("lab", "run", "--kernel", Kernel, "--add", $"{file}:/data/payload.txt", "--",
            "cat /data/payload.txt");
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("payload-from-the-host", result.StandardOutput);
    }

    [Fact]
    public async Task Lab_run_stops_a_guest_that_outlives_its_timeout()
    {
        var clock = Stopwatch.StartNew();
        var result = await Kintsugi("lab", "run", "--kernel", Kernel, "--timeout", "15", "--", "sleep 600");
        Assert.Equal((int)ExitCode.LabTimeout, result.ExitCode);
        Assert.Contains("timed out", result.StandardError);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(120), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task The_guest_reaches_the_hosts_loopback_at_10_0_2_2()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var serve = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            await using var stream = client.GetStream();
            var buffer = new byte[4096];
            _ = await stream.ReadAsync(buffer);
            await stream.WriteAsync(
                Encoding.ASCII.GetBytes("HTTP/1.0 200 OK\r\nContent-Length: 16\r\n\r\nhello-from-host\n"));
        });
        var result = await Kintsugi("lab", "run", "--kernel", Kernel, "--timeout", "120", "--",
            $"wget -q -O - http://10.0.2.2:{port}/");
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("hello-from-host", result.StandardOutput);
        await serve;
    }

    [Fact]
    public async Task Lab_run_refuses_an_unknown_kernel_with_a_clear_message()
    {
        var result = await Kintsugi("lab", "run", "--kernel", "6.1.0-9999-cloud-amd64", "--", "true");
        Assert.Equal((int)ExitCode.NotFound, result.ExitCode);
        Assert.Contains("is not in the archive", result.StandardError);
    }
}

/// <summary>kintsugi lab shell: a person's interactive shell on the guest's serial console.</summary>
[Collection("6.1 cloud kernel")]
public sealed class LabShellSpecification
{
    [Fact]
    public async Task Lab_shell_runs_what_is_typed_and_exits_with_the_shells_status()
    {
        await KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);
        var info = new ProcessStartInfo(Repository.KintsugiBinary)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute =
                false,
        };
        foreach (var argument in new[] { "lab", "shell", "--kernel", TestKernels.Debian12Cloud61.Value })
            info.ArgumentList.Add(argument);
        using var process = Process.Start(info)!;
        var screen = new StringBuilder();
        var reader = Task.Run(async () =>
        {
            var buffer = new char[256];
            int read;
            while ((read = await process.StandardOutput.ReadAsync(buffer)) > 0) lock (screen)
                screen.Append(buffer, 0, read);
        });
        _ = process.StandardError.ReadToEndAsync();
        string Screen() { lock (screen) return screen.ToString(); }
        try
        {
            // Type only once the prompt shows: the emulated UART drops what arrives before the shell reads.
            await WaitFor(() => Screen().Contains("# ", StringComparison.Ordinal), TimeSpan.FromSeconds(120));
            // busybox's line editor asks the terminal for the cursor position at each prompt and can swallow
            // keys typed while it waits for the answer, as a person's terminal never does: retype until seen.
            for (var attempt = 0; attempt < 10 && !Screen().Contains("typed-42", StringComparison.Ordinal); attempt++)
            {
                await process.StandardInput.WriteAsync("echo typed-$((6*7))\n");
                await process.StandardInput.FlushAsync();
                await Task.Delay(3000);
            }
            Assert.Contains("typed-42", Screen());
            for (var attempt = 0; attempt < 10 && !process.HasExited; attempt++)
            {
                await process.StandardInput.WriteAsync("exit 5\n");
                await process.StandardInput.FlushAsync();
                await Task.WhenAny(process.WaitForExitAsync(), Task.Delay(5000));
            }
            Assert.True(process.HasExited, "the shell did not exit");
            await reader;
            Assert.Equal(5, process.ExitCode);
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
    }

    private static async Task WaitFor(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < timeout, "the shell prompt never appeared");
            await Task.Delay(100);
        }
    }
}
