using System.Text.Json;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Tests;

/// <summary>kintsugi kernel test, through the real command line, proving fixture modules on their kernel.</summary>
public abstract class KernelTestCommandSpecification(KernelRelease release) : IDisposable
{
    private readonly TemporaryDirectory _directory = new();
    private string Check => _directory["check.sh"];

    public void Dispose() => _directory.Dispose();

    private async Task<(CommandResult Result, JsonElement Json)> TestAsync(string checkScript,
        string module = "kintsugi_fixture_cmdline_a")
    {
        var kernel = await KernelUnderTest.GetAsync(release);
        await File.WriteAllTextAsync(Check, checkScript);
        var result = await ExternalCommand.RunAsync(Repository.KintsugiBinary,
            ["kernel", "test", kernel.Modules[module], "--target", release.Value, "--check", Check, "--json"]);
        return (result, JsonDocument.Parse(result.StandardOutput).RootElement.Clone());
    }

    [Fact]
    public async Task A_module_whose_check_fails_before_passes_while_loaded_and_fails_after_passes()
    {
        var (result, json) = await TestAsync("grep -q kintsugi-fixture-a /proc/cmdline\n");
        Assert.True(result.ExitCode == 0, result.StandardOutput + result.StandardError);
        Assert.Equal("pass", json.GetProperty("verdict").GetString());
        Assert.Equal(["check before load", "load", "check while loaded", "unload", "check after unload"],
            json.GetProperty("steps").EnumerateArray().Select(s => s.GetProperty("name").GetString()));
        Assert.All(json.GetProperty("steps").EnumerateArray(), s => Assert.True(s.GetProperty("passed").GetBoolean()));
    }

    [Fact]
    public async Task A_check_that_passes_without_the_patch_fails_the_test()
    {
        var (result, json) = await TestAsync("grep -q console= /proc/cmdline\n");
        Assert.Equal((int)ExitCode.TestFailed, result.ExitCode);
        Assert.Equal("fail", json.GetProperty("verdict").GetString());
        var before = json.GetProperty("steps").EnumerateArray().First();
        Assert.Equal("check before load", before.GetProperty("name").GetString());
        Assert.False(before.GetProperty("passed").GetBoolean());
    }

    [Fact]
    public async Task A_module_that_makes_the_kernel_warn_fails_the_test_naming_the_warning()
    {
        var (result, json) =
            await TestAsync("grep -q kintsugi-fixture-warn /proc/cmdline\n", "kintsugi_fixture_cmdline_warn");
        Assert.Equal((int)ExitCode.TestFailed, result.ExitCode);
        Assert.Equal("fail", json.GetProperty("verdict").GetString());
        Assert.All(json.GetProperty("steps").EnumerateArray(), s => Assert.True(s.GetProperty("passed").GetBoolean()));
        Assert.Contains(json.GetProperty("logProblems").EnumerateArray(), p =>
            p.GetString()!.Contains("deliberate warning", StringComparison.Ordinal)
            || p.GetString()!.Contains("WARNING:", StringComparison.Ordinal));
        Assert.Contains(json.GetProperty("taintProblems").EnumerateArray(), p =>
            p.GetString()!.StartsWith("W ", StringComparison.Ordinal));
    }
}

[Collection("6.1 cloud kernel")]
public sealed class KernelTestCommandOn61CloudKernel() : KernelTestCommandSpecification(TestKernels.Debian12Cloud61);

[Collection("6.12 cloud kernel")]
public sealed class KernelTestCommandOn612CloudKernel() : KernelTestCommandSpecification(TestKernels.Debian12Cloud612);
