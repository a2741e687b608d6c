using System.CommandLine;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Kintsugi.Agent;
using Kintsugi.Bundles;
using Kintsugi.Kernel;

namespace Kintsugi.Cli;

/// <summary>agent enroll --json.</summary>
public sealed record EnrollResult(bool Changed, string Server, string? Machine, string Config,
    IReadOnlyList<string> TrustedKeys, string Service, AgentCheckResult Check);

/// <summary>
/// <c>kintsugi agent enroll</c>: from a fresh machine to a running, enrolled agent in one command. Phases:
/// check the inputs, write configuration and trust, enroll (a check-in that also says where the machine
/// stands), enable and start the agent, report.
/// </summary>
internal static class AgentEnrollCommand
{
    public static Command Create()
    {
        var server = new Option<string>("--server")
        { Description = "The patch server's URL, for example https://patches.example.net:8443", Required = true };
        var tokenFile = new Option<FileInfo>("--token-file")
        {
            Description =
            "A file with an enrollment token (kintsugi server tokens enroll); kept as token beside the " +
            "configuration, mode 0600",
            Required = true
        };
        var ca = new Option<FileInfo?>("--ca")
        {
            Description =
            "The server's certificate (its tls/server.crt) or the CA that issued it, PEM; default: the system's CAs"
        };
        var trust = new Option<FileInfo[]>("--trust")
        {
            Description = "A publisher's public key (.pub) bundles must be signed by (repeatable)",
            AllowMultipleArgumentsPerToken = false
        };
        var config = new Option<string>("--config")
        {
            Description = "Where to write the agent's configuration",
            DefaultValueFactory = _ => AgentConfig.DefaultPath
        };
        var wait = new Option<string>("--wait")
        {
            Description =
            "How long to keep trying while the server cannot be reached or is busy (network not up yet, a fleet " +
            "enrolling at once): s, m or h; 0 tries once",
            DefaultValueFactory = _ => "5m"
        };
        var noStart = new Option<bool>("--no-start")
        { Description = "Write and enroll, but do not enable or start kintsugi-agent.service" };
        var json = Cli.Json();
        var command = new Command("enroll",
            "Write the agent's configuration and trust, enroll this machine with the server, enable and start the " +
            "agent, and print where the machine stands")
            { server, tokenFile, ca, trust, config, wait, noStart, json };
        command.WithExamples(
            "kintsugi agent enroll --server https://patches.example.net:8443 --token-file /root/enroll.token --ca " +
            "server.crt --trust publisher.pub",
            "kintsugi agent enroll --server https://10.0.2.2:8443 --token-file t --no-start --json");
        command.Action = Cli.Run(async parse =>
        {
            var configPath = Path.GetFullPath(parse.GetValue(config)!);
            var directory = Path.GetDirectoryName(configPath)!;
            var quiet = parse.GetValue(json);

            // 1. Inputs, all checked before anything is written.
            var url = parse.GetValue(server)!;
            if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("https" or "http"))
                throw new UsageException($"--server '{url}' is not an http(s) URL");
            var token = ReadToken(parse.GetValue(tokenFile)!.FullName);
            var caPem = parse.GetValue(ca) is { } caFile ? ReadCertificates(caFile.FullName) : null;
            var keys = (parse.GetValue(trust) ?? []).Select(f => PublisherPublicKey.Load(f.FullName)).ToList();
            var patience = AgentConfig.ParseDuration(parse.GetValue(wait)!, "--wait", 0, TimeSpan.Zero);

            // 2. Configuration and trust.
            var trustDirectory = Path.Combine(directory, "trust");
            var store = TrustStore.Open(trustDirectory);
            foreach (var key in keys) store.Add(key);
            var tokenPath = Path.Combine(directory, "token");
            AtomicFile.WriteSecret(tokenPath, token);
            string? caPath = null;
            if (caPem is not null) AtomicFile.WriteText(caPath = Path.Combine(directory, "server-ca.pem"), caPem);
            AtomicFile.WriteText(configPath, ConfigText(uri, caPath, tokenPath, trustDirectory));
            if (!quiet)
                Cli.Progress($"wrote {configPath}"
                + (keys.Count > 0 ? $"; trusted {string.Join(", ", keys.Select(k => k.Id))} in {trustDirectory}" : ""));
            if (store.Keys.Count == 0)
                Cli.Progress($"warning: {trustDirectory} trusts no publisher key yet: every bundle will be refused " +
                "(give --trust KEY.pub)");

            // 3. Enroll, and learn where the machine stands.
            var settings = AgentConfig.Load(configPath);
            var agent = new MachineAgent(settings, MachinePaths.Default, quiet ? _ => { }
            : message => Cli.Progress(message));
            var check = await agent.CheckPatientlyAsync(patience, CancellationToken.None);

            // 4. The service.
            var service = parse.GetValue(noStart) ? "not started (--no-start)" : StartAgent(configPath);

            // 5. Where the machine stands.
            if (quiet)
                Cli.WriteJson(new EnrollResult(true, uri.ToString(), agent.EnrolledMachine, configPath,
                    [.. keys.Select(k => k.Id.ToString())], service, check), ChangeJson.Default.EnrollResult);
            else
            {
                Console.WriteLine($"enrolled:  machine {agent.EnrolledMachine} at {uri}");
                Console.WriteLine($"kernel:    {RunningKernel.Release} ({check.State})");
                Console.WriteLine((check.UpToDate ? "release:   up to date: " : "release:   ") + check.Detail +
                    (check.UpToDate || service.StartsWith("active", StringComparison.Ordinal) is false ? ""
                        : " (the agent applies it now)"));
                Console.WriteLine($"agent:     {AgentUnit.Name} {service}");
            }
            return 0;
        });
        return command;
    }

    private static string ReadToken(string path)
    {
        string text;
        try { text = File.ReadAllText(path).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new AgentException($"cannot read the token file {path}: {e.Message}", ExitCode.NotFound, e);
        }
        if (text.Length == 0 || text.Contains('\n'))
            throw new AgentException($"{path} must hold one enrollment token on one line", ExitCode.InputRefused);
        return text;
    }

    private static string ReadCertificates(string path)
    {
        var certificates = new X509Certificate2Collection();
        try { certificates.ImportFromPemFile(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
        {
            throw new AgentException($"cannot read the server certificate {path}: {e.Message}", ExitCode.InputRefused,
                e);
        }
        if (certificates.Count == 0)
            throw new AgentException($"{path} holds no PEM certificate", ExitCode.InputRefused);
        return File.ReadAllText(path);
    }

    private static string ConfigText(Uri server, string? ca, string tokenFile, string trust) =>
        $"""
        # Written by kintsugi agent enroll at {DateTimeOffset.UtcNow:u}. Keys: kintsugi-agent(1), docs/cli.md.
        server = {server}
        {(ca is null ? "# server-ca = (the system's CAs)" : $"server-ca = {ca}")}
        token-file = {tokenFile}
        trust = {trust}

        """;

    /// <summary>
    /// The packaged unit when the package is installed, else one written for this binary; then, under systemd,
    /// daemon-reload, enable --now and a restart (an agent already running re-reads the new configuration).
    /// </summary>
    private static string StartAgent(string configPath)
    {
        var paths = MachinePaths.Default;
        if (!Systemctl.Packaged(AgentUnit.Name) || configPath != AgentConfig.DefaultPath)
            AgentUnit.Install(paths, SystemdUnit.CurrentCommand(), configPath);
        else if (!Systemctl.Running)
            AgentUnit.Enable(paths, Path.Combine(Systemctl.PackagedUnits, AgentUnit.Name));
        if (!Systemctl.Running) return "enabled (systemd is not running here: it starts at the next boot)";
        Systemctl.DaemonReload();
        Systemctl.EnableNow(AgentUnit.Name);
        Systemctl.Restart(AgentUnit.Name);
        return Systemctl.ActiveState(AgentUnit.Name) is var state && state == "active" ? "active (enabled)"
            : $"{state} (enabled; see journalctl -u {AgentUnit.Name})";
    }
}
