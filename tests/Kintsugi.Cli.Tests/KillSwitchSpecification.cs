using System.Text.Json;

namespace Kintsugi.Cli.Tests;

/// <summary>kintsugi disable|enable: the kill switch, run as root in a sandboxed copy of this machine's /etc.</summary>
public sealed class KillSwitchSpecification : IDisposable
{
    private readonly MachineSandbox _machine = new();

    public void Dispose() => _machine.Dispose();

    private static JsonElement Json(CommandResult result)
    {
        Assert.True(result.StandardOutput.TrimStart().StartsWith('{'), result.StandardError + result.StandardOutput);
        return JsonDocument.Parse(result.StandardOutput).RootElement.Clone();
    }

    [Fact]
    public async Task Disable_writes_the_switch_file_with_the_reason_and_status_reports_disabled()
    {
        var disabled = await _machine.RunAsync("disable", "--reason", "INC-4711", "--json");
        Assert.Equal(0, disabled.ExitCode);
        var result = Json(disabled);
        Assert.True(result.GetProperty("changed").GetBoolean());
        Assert.False(result.GetProperty("enabled").GetBoolean());
        Assert.Contains("INC-4711", File.ReadAllText(_machine.Written("/etc/kintsugi/disabled")));

        var status = Json(await _machine.RunAsync("status", "--json"));
        Assert.Equal("/etc/kintsugi/disabled exists", status.GetProperty("disabledBecause").GetString());
    }

    [Fact]
    public async Task Disabling_twice_changes_nothing_the_second_time()
    {
        await _machine.RunAsync("disable");
        var again = await _machine.RunAsync("disable", "--json");
        Assert.Equal(0, again.ExitCode);
        Assert.False(Json(again).GetProperty("changed").GetBoolean());
    }

    [Fact]
    public async Task Enable_removes_the_switch_file_and_is_idempotent()
    {
        await _machine.RunAsync("disable");
        var enabled = await _machine.RunAsync("enable", "--json");
        Assert.Equal(0, enabled.ExitCode);
        Assert.True(Json(enabled).GetProperty("changed").GetBoolean());
        Assert.True(Json(enabled).GetProperty("enabled").GetBoolean());
        Assert.False(File.Exists(_machine.Written("/etc/kintsugi/disabled")));

        var again = await _machine.RunAsync("enable");
        Assert.Equal(0, again.ExitCode);
        Assert.Contains("already enabled", again.StandardOutput);
    }

    [Fact]
    public async Task Unload_all_with_nothing_loaded_changes_nothing_and_succeeds()
    {
        var result = await _machine.RunAsync("kernel", "unload", "--all", "--json");
        Assert.Equal(0, result.ExitCode);
        var json = Json(result);
        Assert.False(json.GetProperty("changed").GetBoolean());
        Assert.Equal(0, json.GetProperty("removed").GetArrayLength());
    }
}
