using System.Text.Json;
using System.Text.RegularExpressions;
using Kintsugi.Kernel;
using Kintsugi.Testing;

namespace Kintsugi.Cli.Tests;

/// <summary>
/// kintsugi status --format openvex|prometheus: what scanners and node_exporter read. The formats are
/// specified on the status a patched Debian 12 machine reports (the lab tests check the same output on a
/// really patched guest), and run for real on this host.
/// </summary>
public sealed class StatusFormatsSpecification
{
    private const string Version = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)";

    private static MachineStatus Patched(string state = "applied") => new(
        "6.1.0-56-cloud-amd64", "3b43fad5034874490492495d552c0af6a5fab235", Version,
        MachineStatus.EffectiveVersionString(Version, "6.1.170-1"),
        state, null, "0",
        [new PatchStatus("kintsugi_cmdline_2", true, true, false, "healthy", "ab", "6.1.170-1", [], 2, "sha256:cd")],
        Level: 2, Bundle: "sha256:cd",
        CvesFixed: [new FixedCve("CVE-2024-1086", "high", "2024-01-31"),
        new FixedCve("CVE-2025-0001", "critical", "2025-01-02")],
        Fixes: ["CVE-2024-1086", "CVE-2025-0001"], EffectivePackageVersion: "6.1.170-1");

    private static MachineStatus Unpatched(string state) => new(
        "6.1.0-56-cloud-amd64", "3b43fad5034874490492495d552c0af6a5fab235", Version, Version, state, null, "0", []);

    private static JsonElement OpenVex(MachineStatus status) =>
        JsonDocument.Parse(StatusReports.OpenVex(status, "web-1", "kintsugi 0.1.0", DateTimeOffset.UtcNow).ToJson())
        .RootElement;

    [Fact]
    public void An_applied_level_states_each_cve_it_fixes_as_fixed_on_the_running_kernel_package()
    {
        var document = OpenVex(Patched());
        Assert.Empty(OpenVexRules.Problems(document));
        var statements = document.GetProperty("statements").EnumerateArray().ToList();
        Assert.Equal(["CVE-2024-1086", "CVE-2025-0001"],
            statements.Select(s => s.GetProperty("vulnerability").GetProperty("name").GetString()));
        Assert.All(statements, s =>
        {
            Assert.Equal("fixed", s.GetProperty("status").GetString());
            Assert.Equal("pkg:deb/debian/linux-image-6.1.0-56-cloud-amd64@6.1.158-1?arch=amd64",
                s.GetProperty("products")[0].GetProperty("@id").GetString());
            Assert.Contains("level 2", s.GetProperty("status_notes").GetString());
        });
    }

    [Theory]
    [InlineData("nothing-to-apply")]
    [InlineData("apply-failed")]
    [InlineData("disabled")]
    public void Without_an_applied_level_the_document_claims_nothing(string state)
    {
        var document = OpenVex(Unpatched(state));
        Assert.Empty(OpenVexRules.Problems(document));
        Assert.Equal(0, document.GetProperty("statements").GetArrayLength());
    }

    [Fact]
    public void The_document_id_changes_with_the_facts_and_only_with_them()
    {
        var a = OpenVex(Patched()).GetProperty("@id").GetString();
        var again = OpenVex(Patched()).GetProperty("@id").GetString();
        var none = OpenVex(Unpatched("nothing-to-apply")).GetProperty("@id").GetString();
        Assert.Equal(a, again);
        Assert.NotEqual(a, none);
    }

    /// <summary>The exposition format node_exporter's textfile collector parses: HELP and TYPE once per metric, before
    /// its samples.</summary>
    private static Dictionary<string, double> ParsePrometheus(string text)
    {
        var samples = new Dictionary<string, double>();
        var typed = new HashSet<string>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var type = Regex.Match(line, @"^# TYPE ([a-z_:][a-z0-9_:]*) (gauge|counter)$");
            if (type.Success) { Assert.True(typed.Add(type.Groups[1].Value), $"TYPE twice: {line}"); continue; }
            if (line.StartsWith("# HELP ", StringComparison.Ordinal)) continue;
            var sample =
                Regex.Match(line, @"^([a-z_:][a-z0-9_:]*)(\{(?:[a-z_]+=""(?:[^""\\]|\\.)*"",?)*\})? (-?[0-9.e+]+)$");
            Assert.True(sample.Success, $"not a sample: {line}");
            Assert.Contains(sample.Groups[1].Value, typed);
            Assert.True(samples.TryAdd(sample.Groups[1].Value + sample.Groups[2].Value, double.Parse(
                sample.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture)), $"duplicate: {line}");
        }
        return samples;
    }

    [Fact]
    public void The_prometheus_textfile_has_the_state_one_hot_the_level_and_each_cve_fixed()
    {
        var samples = ParsePrometheus(StatusReports.Prometheus(Patched()));
        Assert.Equal(1, samples["kintsugi_livepatch_state{state=\"applied\"}"]);
        Assert.Equal(1, samples.Where(s => s.Key.StartsWith("kintsugi_livepatch_state{", StringComparison.Ordinal))
            .Sum(s => s.Value));
        Assert.Equal(2, samples["kintsugi_livepatch_level{release=\"6.1.0-56-cloud-amd64\"}"]);
        Assert.Equal(2, samples["kintsugi_livepatch_cves_fixed"]);
        Assert.Equal(1, samples["kintsugi_livepatch_cve_fixed{cve=\"CVE-2025-0001\",severity=\"critical\"}"]);
        Assert.Equal(1, samples["kintsugi_livepatch_patches_loaded"]);
        Assert.Contains(samples.Keys, k => k.StartsWith("kintsugi_kernel_info{", StringComparison.Ordinal)
            && k.Contains("effective_version=\"#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-1 (2025-11-09)\""));
    }

    [Fact]
    public async Task On_this_host_status_prints_a_valid_openvex_document()
    {
        var result = await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["status", "--format", "openvex"]);
        Assert.True(result.ExitCode == 0, result.StandardError);
        Assert.Empty(OpenVexRules.Problems(JsonDocument.Parse(result.StandardOutput).RootElement));
    }

    [Fact]
    public async Task On_this_host_status_writes_the_prometheus_textfile_to_the_output_file()
    {
        using var machine = new MachineSandbox();
        var result =
            await machine.RunAsync("status", "--format", "prometheus", "-o", "/var/lib/node-exporter/kintsugi.prom");
        Assert.True(result.ExitCode == 0, result.StandardError);
        Assert.Equal("", result.StandardOutput);
        var samples = ParsePrometheus(File.ReadAllText(machine.Written("/var/lib/node-exporter/kintsugi.prom")));
        Assert.Equal(1, samples.Where(s => s.Key.StartsWith("kintsugi_livepatch_state{", StringComparison.Ordinal))
            .Sum(s => s.Value));
    }

    [Fact]
    public async Task Json_and_a_different_format_together_are_a_usage_error()
    {
        var result =
            await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["status", "--json", "--format", "openvex"]);
        Assert.Equal((int)ExitCode.Usage, result.ExitCode);
    }
}
