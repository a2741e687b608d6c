using System.Text.Json;
using Kintsugi.Testing;
using Kintsugi.User;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// `kintsugi user list --json` and `kintsugi status --json` on this host show a user-space patch applied in a real
/// process, with the documented fields (docs/user-space.md, "Status").
/// </summary>
public sealed class UserPatchListingSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private readonly LoopProgram _loop;

    public UserPatchListingSpecification() => _loop = new LoopProgram(_dir["loop"]);

    public void Dispose()
    {
        _loop.Dispose();
        _dir.Dispose();
    }

    private static async Task<JsonElement> JsonOf(params string[] arguments)
    {
        var result = await ExternalCommand.RunAsync(Repository.KintsugiBinary, arguments);
        Assert.True(result.ExitCode == 0,
            $"kintsugi {string.Join(' ', arguments)}: exit {result.ExitCode}\n{result.StandardError}");
        return JsonDocument.Parse(result.StandardOutput).RootElement.Clone();
    }

    private static void IsThePatch(JsonElement listed, UserPatch patch, int pid)
    {
        Assert.Equal(("loop-compute-fix", patch.IdHex, patch.Target.BuildId.ToString(), "loop", 1),
            (listed.GetProperty("name").GetString(), listed.GetProperty("patchId").GetString(),
            listed.GetProperty("buildId").GetString(),
             listed.GetProperty("object").GetString(), listed.GetProperty("functions").GetInt32()));
        Assert.Equal(JsonValueKind.Null, listed.GetProperty("level").ValueKind);
        var process = Assert.Single(listed.GetProperty("processes").EnumerateArray());
        Assert.Equal((pid, "loop"),
            (process.GetProperty("pid").GetInt32(), process.GetProperty("command").GetString()));
    }

    [Fact]
    public async Task User_list_and_status_in_json_show_a_patch_running_in_a_process()
    {
        var pid = _loop.Start();
        var (patch, _) = _loop.Patch("loop-compute-fix");
        Assert.Equal(ProcessOutcome.Applied, new UserPatcher().Apply(pid, patch).Outcome);

        IsThePatch(Assert.Single((await JsonOf("user", "list", "--json", "--pid", pid.ToString())).EnumerateArray()),
            patch, pid);
        var status = await JsonOf("status", "--json");
        IsThePatch(Assert.Single(status.GetProperty("userPatches").EnumerateArray(), p =>
            p.GetProperty("patchId").GetString() == patch.IdHex), patch, pid);
        Assert.True(status.TryGetProperty("release", out _));
    }
}
