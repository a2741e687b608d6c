using Kintsugi.Testing;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// kintsugi uname speaks uname(1)'s flags: on a machine with no livepatch applied (this host) it prints
/// exactly what coreutils uname prints. (With a patch applied, in the lab, -v names the effective version.)
/// </summary>
public sealed class UnameCommandSpecification
{
    [Theory]
    [InlineData("-a")]
    [InlineData("-s")]
    [InlineData("-r")]
    [InlineData("-v")]
    [InlineData("-m")]
    [InlineData("-sr")]
    [InlineData("-n", "-r")]
    [InlineData("-srvmo")]
    [InlineData("--kernel-release")]
    [InlineData("--all")]
    public async Task Without_a_patch_it_prints_what_uname_prints(params string[] flags)
    {
        var ours = await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["uname", .. flags]);
        var theirs = await ExternalCommand.RunAsync("uname", flags);
        Assert.True(ours.ExitCode == 0, ours.StandardError);
        Assert.Equal(theirs.StandardOutput, ours.StandardOutput);
    }

    [Fact]
    public async Task No_flag_prints_the_kernel_name()
    {
        var ours = await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["uname"]);
        Assert.Equal("Linux\n", ours.StandardOutput);
    }

    [Fact]
    public async Task An_unknown_flag_is_a_usage_error()
    {
        var ours = await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["uname", "-x"]);
        Assert.Equal((int)ExitCode.Usage, ours.ExitCode);
        Assert.Contains("invalid option -- 'x'", ours.StandardError);
    }
}
