using Kintsugi.Kernel;

namespace Kintsugi.Agent.Tests;

/// <summary>The agent's one configuration file.</summary>
public sealed class AgentConfigSpecification
{
    [Fact]
    public void An_offline_configuration_reads_every_setting()
    {
        var config = AgentConfig.Parse("""
            # air-gapped
            offline-directory = /srv/bundles
            trust = /etc/kintsugi/trust-2
            check-interval = 30m
            settle = 20
            transition-timeout = 2m
            on-bug = keep
            """, "agent.conf");
        Assert.Equal("/srv/bundles", config.OfflineDirectory);
        Assert.Null(config.Server);
        Assert.Equal("/etc/kintsugi/trust-2", config.TrustStore);
        Assert.Equal(TimeSpan.FromMinutes(30), config.CheckInterval);
        Assert.Equal(TimeSpan.FromSeconds(20), config.Settle);
        Assert.Equal(TimeSpan.FromMinutes(2), config.TransitionTimeout);
        Assert.Equal(BugPolicy.Keep, config.OnBug);
    }

    [Fact]
    public void Defaults_are_hourly_checks_and_revert_on_kernel_problems()
    {
        var config = AgentConfig.Parse("offline-directory = /srv/bundles", "agent.conf");
        Assert.Equal(TimeSpan.FromHours(1), config.CheckInterval);
        Assert.Equal(BugPolicy.Revert, config.OnBug);
        Assert.Equal("/etc/kintsugi/trust", config.TrustStore);
    }

    [Fact]
    public void A_server_configuration_reads_the_token_from_a_file()
    {
        using var directory = new TemporaryDirectory();
        var token = directory["token"];
        File.WriteAllText(token, "ket_abc\n");
        var config = AgentConfig.Parse($"server = https://patches.example.com/\ntoken-file = {token}\nserver-ca " +
            $"= /etc/kintsugi/server.crt", "agent.conf");
        Assert.Equal(new Uri("https://patches.example.com/"), config.Server);
        Assert.Equal("ket_abc", config.EnrollmentToken);
        Assert.Equal("/etc/kintsugi/server.crt", config.ServerCertificate);
    }

    [Theory]
    [InlineData("", "has no settings")]
    [InlineData("server = https://a.example\noffline-directory = /srv", "exactly one of server")]
    [InlineData("trust = /etc/kintsugi/trust", "exactly one of server")]
    [InlineData("offline-directory = /srv\ncolour = blue", "agent.conf:2: unknown key 'colour'")]
    [InlineData("offline-directory = /srv\ncheck-interval = soon", "agent.conf:2: 'soon' is not a duration")]
    [InlineData("offline-directory = /srv\ncheck-interval = 1s", "below the minimum")]
    [InlineData("offline-directory = /srv\non-bug = ignore", "on-bug must be keep or revert")]
    [InlineData("offline-directory = /srv\neffective-uname = true", "effective-uname must be yes or no")]
    [InlineData("offline-directory = /srv\noffline-directory = /other", "set twice")]
    [InlineData("server = ftp://a.example", "not an http(s) URL")]
    [InlineData("server = http://patches.example.com/\ntoken = ket_x", "is not https")]
    [InlineData("server = http://patches.example.com/\ninsecure-http = maybe", "insecure-http must be yes or no")]
    [InlineData("offline-directory = /srv\ntoken = ket_x", "only makes sense with server")]
    [InlineData("offline-directory = /srv\nserver-ca = /etc/kintsugi/server.crt",
        "server-ca only makes sense with server")]
    [InlineData("offline-directory /srv", "is not 'key = value'")]
    public void A_wrong_configuration_is_refused_naming_the_line(string text, string because)
    {
        var error = Assert.Throws<AgentException>(() => AgentConfig.Parse(text, "agent.conf"));
        Assert.Contains(because, error.Message);
        Assert.Equal(ExitCode.Usage, error.ExitCode);
    }

    [Fact]
    public void A_plain_http_server_is_accepted_only_when_the_configuration_says_so_explicitly()
    {
        var config =
            AgentConfig.Parse("server = http://10.0.2.2:8080/\ntoken = ket_x\ninsecure-http = yes", "agent.conf");
        Assert.Equal("http", config.Server!.Scheme);
        Assert.True(config.AllowInsecureHttp);
    }

    [Theory]
    [InlineData("", null)]
    [InlineData("\neffective-uname = yes", true)]
    [InlineData("\neffective-uname = no", false)]
    public void
        Effective_uname_is_an_explicit_yes_or_no_and_unset_leaves_it_to_the_switch_file(string line, bool? expected)
    {
        Assert.Equal(expected, AgentConfig.Parse("offline-directory = /srv" + line, "agent.conf").EffectiveUname);
    }

    [Fact]
    public void A_missing_configuration_file_is_not_found()
    {
        var error = Assert.Throws<AgentException>(() => AgentConfig.Load("/nonexistent/agent.conf"));
        Assert.Equal(ExitCode.NotFound, error.ExitCode);
    }

    [Fact]
    public void The_unit_runs_the_agent_with_its_configuration_restarts_it_and_honours_the_kill_switch()
    {
        var text = AgentUnit.Text("/usr/bin/kintsugi", "/etc/kintsugi/agent.conf");
        Assert.Contains("ExecStart=\"/usr/bin/kintsugi\" agent run --config \"/etc/kintsugi/agent.conf\"", text);
        Assert.Contains("Restart=on-failure", text);
        Assert.Contains("ConditionKernelCommandLine=!kintsugi.enable=0", text);
        Assert.Contains("WantedBy=multi-user.target", text);
    }
}
