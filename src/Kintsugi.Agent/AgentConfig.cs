using System.Globalization;
using Kintsugi.Kernel;

namespace Kintsugi.Agent;

/// <summary>
/// The agent's one small configuration file (default /etc/kintsugi/agent.conf): <c>key = value</c> lines,
/// <c>#</c> comments. Exactly one source: <c>server</c> (with <c>token</c> or <c>token-file</c> for the
/// first enrollment) or <c>offline-directory</c>. See docs/cli.md for every key.
/// </summary>
public sealed record AgentConfig
{
    public const string DefaultPath = "/etc/kintsugi/agent.conf";

    /// <summary>The patch server's base URL (https://...), or null in offline mode.</summary>
    public Uri? Server { get; init; }

    /// <summary>
    /// A PEM file with the certificate the server must present (its generated tls/server.crt, pinned) or the
    /// CA that issued it; null trusts the system's CAs.
    /// </summary>
    public string? ServerCertificate { get; init; }

    /// <summary>An HTTP(S) proxy to reach the server through (CONNECT for https), or null for a direct
    /// connection.</summary>
    public Uri? Proxy { get; init; }

    /// <summary>The enrollment token (used once, to obtain the per-machine credential).</summary>
    public string? EnrollmentToken { get; init; }

    /// <summary>A directory of bundles (air-gapped machines), or null in server mode.</summary>
    public string? OfflineDirectory { get; init; }

    public string TrustStore { get; init; } = "/etc/kintsugi/trust";

    /// <summary>Whether an <c>http://</c> server is accepted (test labs only: the credential and every answer would be
    /// in clear).</summary>
    public bool AllowInsecureHttp { get; init; }

    /// <summary>How often to check in (server) or scan the directory (offline), before jitter.</summary>
    public TimeSpan CheckInterval { get; init; } = TimeSpan.FromHours(1);

    public BugPolicy OnBug { get; init; } = BugPolicy.Revert;

    /// <summary>How long a loaded patch must run without kernel problems before it is confirmed.</summary>
    public TimeSpan Settle { get; init; } = TimeSpan.FromSeconds(10);

    public TimeSpan TransitionTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Whether the agent applies user-space bundles to running processes (and reports the objects they
    /// map).</summary>
    public bool UserPatching { get; init; } = true;

    /// <summary>
    /// How often installed user-space patches are applied to processes started (or that loaded the object) since the
    /// last pass: a new process runs unpatched for at most this long.
    /// </summary>
    public TimeSpan UserScanInterval { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Whether plain <c>uname -v</c> and <c>/proc/version</c> show the effective version while a patch the agent
    /// applied runs (kept with the installed patch, so boot re-application shows the same); null (unset): the
    /// machine's switch file <c>/etc/kintsugi/effective-uname</c> decides at each load.
    /// docs/decisions/effective-uname.md.
    /// </summary>
    public bool? EffectiveUname { get; init; }

    public static AgentConfig Load(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new AgentException(
            $"no agent configuration at {path}; write one (see docs/cli.md, `kintsugi agent`)", ExitCode.NotFound, e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new AgentException($"canno" +
            $"t read {path}: {e.Message}", ExitCode.Environment, e);
        }
        return Parse(text, path);
    }

    public static AgentConfig Parse(string text, string origin)
    {
        var config = new AgentConfig();
        string? tokenFile = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var number = 0;
        foreach (var raw in text.Split('\n'))
        {
            number++;
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var equals = line.IndexOf('=');
            if (equals <= 0) throw Invalid(origin, number, $"'{line}' is not 'key = value'");
            var key = line[..equals].Trim();
            var value = line[(equals + 1)..].Trim();
            if (!seen.Add(key)) throw Invalid(origin, number, $"{key} is set twice");
            if (value.Length == 0) throw Invalid(origin, number, $"{key} has no value");
            config = key switch
            {
                "server" => config with { Server = ParseServer(value, origin, number) },
                "server-ca" => config with { ServerCertificate = value },
                "proxy" => config with { Proxy = ParseProxy(value, origin, number) },
                "token" => config with { EnrollmentToken = value },
                "token-file" => SetTokenFile(config, tokenFile = value),
                "offline-directory" => config with { OfflineDirectory = value },
                "trust" => config with { TrustStore = value },
                "insecure-http" => config with
                {
                    AllowInsecureHttp = value switch
                    {
                        "yes" => true,
                        "no" => false,
                        _ => throw Invalid(origin, number, $"insecure-http must be yes or no, not '{value}'"),
                    },
                },
                "user-patching" => config with
                {
                    UserPatching = value switch
                    {
                        "yes" => true,
                        "no" => false,
                        _ => throw Invalid(origin, number, $"user-patching must be yes or no, not '{value}'"),
                    },
                },
                "effective-uname" => config with
                {
                    EffectiveUname = value switch
                    {
                        "yes" => true,
                        "no" => false,
                        _ => throw Invalid(origin, number, $"effective-uname must be yes or no, not '{value}'"),
                    },
                },
                "user-scan-interval" =>
                config with { UserScanInterval = ParseDuration(value, origin, number, TimeSpan.FromSeconds(1)) },
                "check-interval" =>
                config with { CheckInterval = ParseDuration(value, origin, number, TimeSpan.FromSeconds(10)) },
                "settle" => config with { Settle = ParseDuration(value, origin, number, TimeSpan.Zero) },
                "transition-timeout" =>
                config with { TransitionTimeout = ParseDuration(value, origin, number, TimeSpan.FromSeconds(1)) },
                "on-bug" => config with
                {
                    OnBug = value switch
                    {
                        "keep" => BugPolicy.Keep,
                        "revert" => BugPolicy.Revert,
                        _ => throw Invalid(origin, number, $"on-bug must be keep or revert, not '{value}'"),
                    },
                },
                _ => throw Invalid(origin, number,
                $"unknown key '{key}' (known: server, server-ca, proxy, token, token-file, " +
                    "offline-directory, trust, insecure-http, check-interval, settle, transition-timeout, on-bug, " +
                    "user-patching, " +
                    "user-scan-interval, effective-uname)"),
            };
        }
        if (seen.Contains("token") && tokenFile is not null)
            throw new AgentException($"{origin}: set token or token-file, not both", ExitCode.Usage);
        if (seen.Count == 0) throw new AgentException($"{origin} has no settings; it needs server (with token) or " +
            $"offline-directory (see docs/cli.md)", ExitCode.Usage);
        if ((config.Server is null) == (config.OfflineDirectory is null))
            throw new AgentException($"{origin}: set exactly one of server (a patch server URL) or offline-directory " +
                $"(a directory of bundles)", ExitCode.Usage);
        if (config.Server is { Scheme: "http" } plain && !config.AllowInsecureHttp)
            throw new AgentException($"{origin}: server {plain} is not https: the machine's credential and every " +
                $"answer the agent acts on would cross the network " +
                                     "readable and changeable; use https (a TLS proxy in front of a server listening " +
                                     "on http), or set insecure-http = yes in a test lab", ExitCode.Usage);
        if (config.OfflineDirectory is not null && config.EnrollmentToken is not null)
            throw new AgentException($"{origin}: an enrollment token only makes sense with server", ExitCode.Usage);
        if (config.OfflineDirectory is not null && config.Proxy is not null)
            throw new AgentException($"{origin}: proxy only makes sense with server", ExitCode.Usage);
        if (config.OfflineDirectory is not null && config.ServerCertificate is not null)
            throw new AgentException($"{origin}: server-ca only makes sense with server", ExitCode.Usage);
        return config;
    }

    private static AgentConfig SetTokenFile(AgentConfig config, string path)
    {
        try { return config with { EnrollmentToken = File.ReadAllText(path).Trim() }; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new AgentException($"cannot read the enrollment token file {path}: {e.Message}", ExitCode.Environment,
                e);
        }
    }

    private static Uri ParseServer(string value, string origin, int line) =>
        Uri.TryCreate(value.TrimEnd('/') + "/", UriKind.Absolute, out var uri) && uri.Scheme is "https" or "http"
            ? uri : throw Invalid(origin, line, $"server '{value}' is not an http(s) URL");

    private static Uri ParseProxy(string value, string origin, int line) =>
        Uri.TryCreate(value, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
        && uri.AbsolutePath is "/" or ""
            ? uri : throw Invalid(origin, line, $"proxy '{value}' is not a proxy URL (http://host:port)");

    /// <summary>Seconds, or a number with s, m, h or d.</summary>
    public static TimeSpan ParseDuration(string value, string origin, int line, TimeSpan minimum)
    {
        var unit = char.IsAsciiLetter(value[^1]) ? value[^1] : 's';
        var digits = char.IsAsciiLetter(value[^1]) ? value[..^1] : value;
        if (!double.TryParse(digits, NumberStyles.Float, CultureInfo.InvariantCulture, out var amount) || amount < 0)
            throw Invalid(origin, line, $"'{value}' is not a duration (seconds, or a number followed by s, m, h or d)");
        var duration = unit switch
        {
            's' => TimeSpan.FromSeconds(amount),
            'm' => TimeSpan.FromMinutes(amount),
            'h' => TimeSpan.FromHours(amount),
            'd' => TimeSpan.FromDays(amount),
            _ => throw Invalid(origin, line, $"'{value}': unknown unit '{unit}' (s, m, h or d)"),
        };
        return duration >= minimum ? duration
            : throw Invalid(origin, line, $"'{value}' is below the minimum of {minimum.TotalSeconds:0} s");
    }

    private static AgentException Invalid(string origin, int line, string message) =>
        new($"{origin}:{line}: {message}", ExitCode.Usage);
}
