using Kintsugi.Testing;

namespace Kintsugi.Lab.Tests;

/// <summary>The documented contract of the command line: every exit code is explained where users look.</summary>
public sealed class CommandLineSpecification
{
    [Fact]
    public async Task Every_exit_code_is_documented_in_help_and_in_the_cli_guide()
    {
        var help = await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["--help"]);
        Assert.True(help.Succeeded, help.StandardError);
        var guide = await File.ReadAllTextAsync(Path.Combine(Repository.Root, "docs", "cli.md"));
        foreach (var code in Enum.GetValues<ExitCode>().Select(c => (int)c))
        {
            Assert.Matches($@"(?m)^\s+{code}\s+\S", help.StandardOutput);
            Assert.Contains($"| {code} |", guide);
        }
    }

    [Fact]
    public async Task An_unknown_option_is_a_usage_error()
    {
        var result = await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["kernel", "list", "--no-such-option"]);
        Assert.Equal((int)ExitCode.Usage, result.ExitCode);
        Assert.Contains("--no-such-option", result.StandardError);
    }

    [Fact]
    public async Task Verbose_shows_the_cause_chain_of_a_failure()
    {
        var quiet =
            await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["kernel", "info", "/nonexistent/patch.ko"]);
        var verbose = await ExternalCommand.RunAsync(Repository.KintsugiBinary,
            ["--verbose", "kernel", "info", "/nonexistent/patch.ko"]);
        Assert.Equal(quiet.ExitCode, verbose.ExitCode);
        Assert.DoesNotContain("caused by", quiet.StandardError);
        Assert.Contains("caused by", verbose.StandardError);
    }
}
