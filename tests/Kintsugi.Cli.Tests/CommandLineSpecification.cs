using System.Diagnostics;
using System.Text.Json;
using Kintsugi.Testing;

namespace Kintsugi.Cli.Tests;

/// <summary>The rules every kintsugi command follows: usage errors, --help with examples, errors as JSON.</summary>
public sealed class CommandLineSpecification
{
    private static Task<CommandResult> Run(params string[] arguments) =>
        ExternalCommand.RunAsync(Repository.KintsugiBinary, arguments);

    [Theory]
    [InlineData("nonsense", "--help")]
    [InlineData("kernel", "nonsense", "--help")]
    [InlineData("agent", "nonsense", "-h")]
    [InlineData("nonsense")]
    public async Task An_unknown_command_is_a_usage_error_even_with_help(params string[] arguments)
    {
        var result = await Run(arguments);
        Assert.Equal((int)ExitCode.Usage, result.ExitCode);
        Assert.Contains("Unrecognized command or argument 'nonsense'", result.StandardError);
        Assert.DoesNotContain("Description:", result.StandardOutput);
    }

    [Theory]
    [InlineData("kernel")]
    [InlineData("agent")]
    public async Task A_command_group_without_a_subcommand_is_a_usage_error(string group)
    {
        var result = await Run(group);
        Assert.Equal((int)ExitCode.Usage, result.ExitCode);
        Assert.Contains($"see kintsugi {group} --help", result.StandardError);
    }

    [Fact]
    public async Task Help_of_a_known_command_succeeds_and_shows_usage_examples()
    {
        var result = await Run("kernel", "unload", "--help");
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("Examples:", result.StandardOutput);
        Assert.Contains("kintsugi kernel unload --all --json", result.StandardOutput);
    }

    [Fact]
    public async Task A_refused_input_under_json_prints_a_json_error_with_the_exit_code()
    {
        var result = await Run("kernel", "load", "/etc/hostname", "--json");
        Assert.Equal((int)ExitCode.InputRefused, result.ExitCode);
        using var document = JsonDocument.Parse(result.StandardOutput);
        var error = document.RootElement.GetProperty("error");
        Assert.Equal(3, error.GetProperty("exitCode").GetInt32());
        Assert.Equal("input-refused", error.GetProperty("kind").GetString());
        Assert.Contains("not a kernel module", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task A_usage_error_under_json_prints_a_json_error()
    {
        var result = await Run("kernel", "load", "--json");
        Assert.Equal((int)ExitCode.Usage, result.ExitCode);
        using var document = JsonDocument.Parse(result.StandardOutput);
        Assert.Equal("usage", document.RootElement.GetProperty("error").GetProperty("kind").GetString());
    }

    [Fact]
    public async Task Trusting_and_retiring_a_key_under_json_say_changed_only_the_first_time()
    {
        using var dir = new TemporaryDirectory();
        Assert.Equal(0, (await Run("keys", "generate", dir["publisher.key"])).ExitCode);
        async Task<(bool Changed, string Action, string Path)> Keys(string verb)
        {
            var result = await Run("keys", verb, dir["publisher.key.pub"], "--trust", dir["trust"], "--json");
            Assert.True(result.ExitCode == 0, result.StandardError);
            using var document = JsonDocument.Parse(result.StandardOutput);
            var root = document.RootElement;
            return (root.GetProperty("changed").GetBoolean(), root.GetProperty("action").GetString()!,
                root.GetProperty("path").GetString()!);
        }

        var trusted = await Keys("trust");
        Assert.Equal((true, "trusted"), (trusted.Changed, trusted.Action));
        Assert.True(File.Exists(trusted.Path));
        Assert.False((await Keys("trust")).Changed);
        var retired = await Keys("retire");
        Assert.Equal((true, "retired"), (retired.Changed, retired.Action));
        Assert.True(File.Exists(retired.Path));
        Assert.False(File.Exists(trusted.Path));
        Assert.False((await Keys("retire")).Changed);
    }

    [Fact]
    public async Task An_interrupted_catch_up_exits_130_saying_how_to_go_on()
    {
        using var cache = new TemporaryDirectory();
        using var output = new TemporaryDirectory();
        var start = new ProcessStartInfo(Repository.KintsugiBinary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            Environment = { ["KINTSUGI_CACHE"] = cache.Path },
        };
        foreach (var argument in new[] { "-v", "kernel", "catch-up", "--target", "6.1.0-50-cloud-amd64", "--to",
            "6.1.187-1", "-o", output.Path }) start.ArgumentList.Add(argument);
        using var catchUp = Process.Start(start)!;
        var stderr = new System.Text.StringBuilder();
        var started = new TaskCompletionSource();
        catchUp.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (stderr) stderr.AppendLine(e.Data);
            // An empty cache: the first stage downloads the kernel's packages.
            if (e.Data.Contains("download", StringComparison.Ordinal)) started.TrySetResult();
        };
        catchUp.OutputDataReceived += (_, _) => { };
        catchUp.BeginErrorReadLine();
        catchUp.BeginOutputReadLine();
        await started.Task.WaitAsync(TimeSpan.FromMinutes(2));
        await Task.Delay(TimeSpan.FromSeconds(2));

        Assert.True((await ExternalCommand.RunAsync("kill", ["-TERM", catchUp.Id.ToString()])).Succeeded);
        // Polled, not awaited: waiting for the exit also waits for the end of its output, which a grandchild that
        // outlives it (an apt method) may hold open.
        for (var waited = 0; !catchUp.HasExited && waited < 300; waited++) await Task.Delay(100);
        Assert.True(catchUp.HasExited, "the interrupted catch-up did not exit within 30 s");
        await Task.Delay(TimeSpan.FromSeconds(1));

        Assert.Equal((int)ExitCode.Interrupted, catchUp.ExitCode);
        lock (stderr)
        {
            Assert.Contains("interrupted: what was finished is kept; run the same command again to go on",
                stderr.ToString());
            Assert.DoesNotContain("internal error", stderr.ToString());
        }
    }

    [Fact]
    public async Task Unload_needs_a_name_or_all_but_not_both()
    {
        Assert.Equal((int)ExitCode.Usage, (await Run("kernel", "unload")).ExitCode);
        Assert.Equal((int)ExitCode.Usage, (await Run("kernel", "unload", "fix_1", "--all")).ExitCode);
    }
}
