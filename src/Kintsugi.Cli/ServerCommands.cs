using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Kintsugi.Cli;

/// <summary>The patch server could not be reached, or refused a request.</summary>
internal sealed class ServerRequestException(string message, ExitCode code, Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = code;
}

/// <summary>
/// <c>kintsugi server ...</c>: <c>run</c> starts the separate <c>kintsugi-server</c> executable (ASP.NET Core
/// stays out of this small, trimmed binary); every other command is a plain HTTPS client of the server's
/// API (docs/server.md), authenticated with an API token.
/// </summary>
internal static class ServerCommands
{
    private static readonly Option<string?> Url = new("--url") { Description = "Server URL (default $KINTSUGI_SERVER_URL, else https://localhost:8443)", Recursive = true };
    private static readonly Option<string?> Token = new("--token") { Description = "API token (default $KINTSUGI_SERVER_TOKEN, or the file in $KINTSUGI_SERVER_TOKEN_FILE)", Recursive = true };
    private static readonly Option<string?> Ca = new("--ca") { Description = "PEM certificate to trust for the server, e.g. its generated tls/server.crt (default $KINTSUGI_SERVER_CA; else the system's CAs)", Recursive = true };

    public static Command Create()
    {
        var server = new Command("server", "The self-hosted patch server: run it, publish, promote, revoke, inspect the fleet, reports, audit") { Url, Token, Ca };
        server.Subcommands.Add(RunCommand());
        server.Subcommands.Add(Publish());
        server.Subcommands.Add(Releases());
        server.Subcommands.Add(Promote());
        server.Subcommands.Add(Revoke());
        server.Subcommands.Add(MetadataCommand());
        server.Subcommands.Add(Machines());
        server.Subcommands.Add(Channels());
        server.Subcommands.Add(Tokens());
        server.Subcommands.Add(Trust());
        server.Subcommands.Add(Report());
        server.Subcommands.Add(Audit());
        server.Subcommands.Add(Export());
        server.Subcommands.Add(Import());
        return server;
    }

    // ---- run: hand over to kintsugi-server ----

    private static Command RunCommand()
    {
        var command = new Command("run", "Run the patch server (starts kintsugi-server run with these options; --help lists them)") { TreatUnmatchedTokensAsErrors = false };
        // The options are kintsugi-server's: --help is handed over too, so it lists them rather than this stub.
        var help = new System.CommandLine.Help.HelpOption();
        command.Options.Add(help);
        command.Action = Cli.Run(async parse =>
        {
            var binary = FindServerBinary();
            var start = new ProcessStartInfo(binary.File) { UseShellExecute = false };
            foreach (var a in binary.Prefix) start.ArgumentList.Add(a);
            start.ArgumentList.Add("run");
            if (parse.GetResult(help) is not null) start.ArgumentList.Add("--help");
            foreach (var a in parse.UnmatchedTokens) start.ArgumentList.Add(a);
            using var process = Process.Start(start) ?? throw new ServerRequestException($"cannot start {binary.File}", ExitCode.Environment);
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; };
            await process.WaitForExitAsync();
            return process.ExitCode;
        });
        help.Action = command.Action;
        return command;
    }

    private static (string File, string[] Prefix) FindServerBinary()
    {
        if (Environment.GetEnvironmentVariable("KINTSUGI_SERVER_BINARY") is { Length: > 0 } configured)
            return configured.EndsWith(".dll", StringComparison.Ordinal) ? ("dotnet", [configured]) : (configured, []);
        var here = Path.GetDirectoryName(Environment.ProcessPath) ?? ".";
        foreach (var dir in new[] { here }.Concat((Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)))
            if (File.Exists(Path.Combine(dir, "kintsugi-server"))) return (Path.Combine(dir, "kintsugi-server"), []);
        throw new ServerRequestException($"kintsugi-server is not beside kintsugi ({here}) nor on PATH; in a checkout, ./kintsugi builds both " +
            "into artifacts/bin; elsewhere install it beside kintsugi or set KINTSUGI_SERVER_BINARY", ExitCode.Environment);
    }

    // ---- the HTTP client ----

    private sealed class Api(HttpClient http, Uri baseAddress) : IDisposable
    {
        public Uri BaseAddress { get; } = baseAddress;

        public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, HttpContent? content = null)
        {
            using var request = new HttpRequestMessage(method, path) { Content = content };
            HttpResponseMessage response;
            try { response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead); }
            catch (HttpRequestException e)
            {
                throw new ServerRequestException($"cannot reach the server at {BaseAddress}: {e.Message}" +
                    (e.InnerException is System.Security.Authentication.AuthenticationException ? " (its certificate is not trusted: pass --ca with its tls/server.crt)" : ""), ExitCode.Environment, e);
            }
            catch (TaskCanceledException e) { throw new ServerRequestException($"the server at {BaseAddress} did not answer in time", ExitCode.Environment, e); }
            if (response.IsSuccessStatusCode) return response;
            var body = await response.Content.ReadAsStringAsync();
            string detail;
            try { detail = JsonNode.Parse(body)?["detail"]?.GetValue<string>() ?? body; }
            catch (JsonException) { detail = body.Length > 300 ? body[..300] : body; }
            var code = response.StatusCode switch
            {
                HttpStatusCode.NotFound => ExitCode.NotFound,
                HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden or HttpStatusCode.TooManyRequests or HttpStatusCode.ServiceUnavailable => ExitCode.Environment,
                >= HttpStatusCode.InternalServerError => ExitCode.Environment,
                _ => ExitCode.InputRefused,
            };
            response.Dispose();
            throw new ServerRequestException($"{method} {path}: {(int)response.StatusCode} {detail}", code);
        }

        public async Task<JsonNode> JsonAsync(HttpMethod method, string path, JsonNode? body = null)
        {
            using var response = await SendAsync(method, path, body is null ? null : new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            return text.Length == 0 ? new JsonObject() : JsonNode.Parse(text)!;
        }

        public void Dispose() => http.Dispose();
    }

    private static Api Connect(ParseResult parse, bool needToken = true)
    {
        var url = parse.GetValue(Url) ?? Environment.GetEnvironmentVariable("KINTSUGI_SERVER_URL") ?? "https://localhost:8443";
        if (!Uri.TryCreate(url, UriKind.Absolute, out var baseAddress) || baseAddress.Scheme is not ("https" or "http"))
            throw new ServerRequestException($"'{url}' is not a server URL (https://host:port)", ExitCode.Usage);
        var token = parse.GetValue(Token) ?? Environment.GetEnvironmentVariable("KINTSUGI_SERVER_TOKEN");
        if (token is null && Environment.GetEnvironmentVariable("KINTSUGI_SERVER_TOKEN_FILE") is { Length: > 0 } file) token = File.ReadAllText(file).Trim();
        if (token is null && needToken) throw new ServerRequestException("an API token is needed: --token, KINTSUGI_SERVER_TOKEN or KINTSUGI_SERVER_TOKEN_FILE", ExitCode.Usage);
        var handler = new SocketsHttpHandler();
        if ((parse.GetValue(Ca) ?? Environment.GetEnvironmentVariable("KINTSUGI_SERVER_CA")) is { Length: > 0 } caPath)
        {
            X509Certificate2 ca;
            try { ca = X509Certificate2.CreateFromPem(File.ReadAllText(caPath)); }
            catch (Exception e) when (e is IOException or System.Security.Cryptography.CryptographicException)
            {
                throw new ServerRequestException($"cannot read the server certificate {caPath}: {e.Message}", ExitCode.InputRefused, e);
            }
            // Trust exactly this certificate (pinned) or anything it issued.
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            {
                if (errors == System.Net.Security.SslPolicyErrors.None) return true;
                if (certificate is null) return false;
                if (certificate.GetCertHashString() == ca.GetCertHashString()) return true;
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()));
            };
        }
        var http = new HttpClient(handler) { BaseAddress = baseAddress, Timeout = TimeSpan.FromMinutes(5) };
        http.DefaultRequestHeaders.UserAgent.ParseAdd($"kintsugi-cli/{Cli.Version}");
        if (token is not null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return new Api(http, baseAddress);
    }

    private static string Escape(string segment) => Uri.EscapeDataString(segment);

    private static void Print(JsonNode node) => Console.WriteLine(node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

    private static string S(JsonNode? node, string name) => node?[name]?.ToString() ?? "-";

    // ---- releases ----

    private static Command Publish()
    {
        var files = new Argument<FileInfo[]>("bundle") { Description = "Signed bundle files (kintsugi bundle sign)", Arity = ArgumentArity.OneOrMore };
        var json = Cli.Json();
        var command = new Command("publish", "Publish signed bundles; the server verifies them against the fleet's trusted publisher keys. Each lands in the first channel.") { files, json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var results = new JsonArray();
            foreach (var file in parse.GetValue(files)!)
            {
                if (!file.Exists) throw new ServerRequestException($"{file.FullName} does not exist", ExitCode.NotFound);
                using var content = new ByteArrayContent(await File.ReadAllBytesAsync(file.FullName));
                content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                using var response = await api.SendAsync(HttpMethod.Post, "/api/v1/releases", content);
                var result = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
                results.Add(result);
                var r = result["release"];
                if (!parse.GetValue(json))
                    Console.WriteLine($"{(result["created"]!.GetValue<bool>() ? "published" : "already published")} {S(r, "id")}: {S(r, "kernelRelease")} level {S(r, "level")} in {S(r?["channels"]?[0], "channel")}");
            }
            if (parse.GetValue(json)) Print(results);
            return 0;
        });
        return command;
    }

    private static Command Releases()
    {
        var json = Cli.Json();
        var build = new Option<string?>("--build") { Description = "Only this kernel build-id" };
        var command = new Command("releases", "List releases: kernel, level, channels, health, revocation") { json, build };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var list = await api.JsonAsync(HttpMethod.Get, "/api/v1/releases" + (parse.GetValue(build) is { } b ? $"?build={Escape(b)}" : ""));
            if (parse.GetValue(json)) { Print(list); return 0; }
            Console.WriteLine($"{"RELEASE",-19} {"KERNEL",-28} {"LVL",3} {"CHANNELS",-22} {"APPLIED",7} {"FAILED",6} STATUS");
            foreach (var r in list.AsArray())
                Console.WriteLine($"{S(r, "id"),-19} {S(r, "kernelRelease"),-28} {S(r, "level"),3} {string.Join(",", r!["channels"]!.AsArray().Select(c => S(c, "channel"))),-22} {S(r["health"], "applied"),7} {S(r["health"], "failed"),6} " +
                    (r["revoked"] is JsonObject rv ? $"revoked: {S(rv, "reason")}" : "active"));
            return 0;
        });
        return command;
    }

    private static Argument<string> ReleaseArgument() => new("release") { Description = "Release id (r_…) or bundle sha256" };

    private static Command Promote()
    {
        var release = ReleaseArgument();
        var channel = new Option<string?>("--channel") { Description = "Target channel (default: the next one); earlier channels are included" };
        var reason = new Option<string?>("--reason") { Description = "Why (recorded in the audit log)" };
        var json = Cli.Json();
        var command = new Command("promote", "Promote a release manually (bypasses the delay and health gate; audited)") { release, channel, reason, json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var body = new JsonObject { ["channel"] = parse.GetValue(channel), ["reason"] = parse.GetValue(reason) };
            var result = await api.JsonAsync(HttpMethod.Post, $"/api/v1/releases/{Escape(parse.GetValue(release)!)}/promote", body);
            if (parse.GetValue(json)) Print(result);
            else Console.WriteLine($"{S(result["release"], "id")} promoted to {string.Join(", ", result["promotedTo"]!.AsArray().Select(c => c!.ToString()))}");
            return 0;
        });
        return command;
    }

    private static Command Revoke()
    {
        var release = ReleaseArgument();
        var reason = new Option<string>("--reason") { Description = "Why (required; recorded in the audit log)", Required = true };
        var json = Cli.Json();
        var command = new Command("revoke", "Revoke a release fleet-wide: agents return to the previous good level (or remove) within the events wait") { release, reason, json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.JsonAsync(HttpMethod.Post, $"/api/v1/releases/{Escape(parse.GetValue(release)!)}/revoke", new JsonObject { ["reason"] = parse.GetValue(reason) });
            if (parse.GetValue(json)) Print(result);
            else Console.WriteLine($"{S(result, "id")} revoked ({S(result, "kernelRelease")} level {S(result, "level")})");
            return 0;
        });
        return command;
    }

    private static Command MetadataCommand()
    {
        var file = new Argument<FileInfo>("metadata") { Description = "Signed release metadata (kintsugi bundle metadata)" };
        var json = Cli.Json();
        var publish = new Command("publish", "Store the publisher's signed release metadata for its kernel build; the levels it revokes are revoked fleet-wide and agents receive it at their next check-in") { file, json };
        publish.Action = Cli.Run(async parse =>
        {
            var path = parse.GetValue(file)!;
            if (!path.Exists) throw new ServerRequestException($"{path.FullName} does not exist", ExitCode.NotFound);
            using var api = Connect(parse);
            var result = await api.JsonAsync(HttpMethod.Post, "/api/v1/metadata", new JsonObject { ["metadata"] = await File.ReadAllTextAsync(path.FullName) });
            if (parse.GetValue(json)) Print(result);
            else Console.WriteLine($"release metadata version {S(result, "version")} for {S(result, "kernelRelease")} ({S(result, "buildId")}): current level {S(result, "currentLevel")}, " +
                                   $"minimum {S(result, "minimumLevel")}, revoked [{string.Join(",", result["revokedLevels"]!.AsArray().Select(l => l!.ToString()))}]; " +
                                   $"releases revoked now: {result["revokedReleases"]!.AsArray().Count}");
            return 0;
        });
        var command = new Command("metadata", "Signed release metadata per kernel build (docs/bundle-format.md): what agents need before they roll back or remove");
        command.Subcommands.Add(publish);
        return command;
    }

    // ---- machines, channels ----

    private static Command Machines()
    {
        var json = Cli.Json();
        var channel = new Option<string?>("--channel") { Description = "Only this channel" };
        var state = new Option<string?>("--state") { Description = "Only this state (applied, apply-failed, ...)" };
        var build = new Option<string?>("--build") { Description = "Only this kernel build-id" };
        var command = new Command("machines", "The machine inventory: kernel, build-id, level, state, last check-in") { json, channel, state, build };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var query = string.Join("&", new[] { ("channel", parse.GetValue(channel)), ("state", parse.GetValue(state)), ("build", parse.GetValue(build)) }
                .Where(p => p.Item2 is not null).Select(p => $"{p.Item1}={Escape(p.Item2!)}"));
            var list = await api.JsonAsync(HttpMethod.Get, "/api/v1/machines" + (query.Length > 0 ? "?" + query : ""));
            if (parse.GetValue(json)) { Print(list); return 0; }
            Console.WriteLine($"{"MACHINE",-19} {"HOSTNAME",-20} {"CHANNEL",-12} {"KERNEL",-28} {"LVL",3} {"STATE",-18} LAST CHECK-IN");
            foreach (var m in list.AsArray())
                Console.WriteLine($"{S(m, "id"),-19} {S(m, "hostname"),-20} {S(m, "channel"),-12} {S(m, "kernelRelease"),-28} {S(m, "level"),3} {S(m, "state"),-18} {S(m, "lastCheckIn")}{(m!["stale"]!.GetValue<bool>() ? " (stale)" : "")}");
            return 0;
        });
        var id = new Argument<string>("machine") { Description = "Machine id (m_…)" };
        var show = new Command("show", "One machine, with everything it last reported") { id, Cli.Json() };
        show.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            Print(await api.JsonAsync(HttpMethod.Get, $"/api/v1/machines/{Escape(parse.GetValue(id)!)}"));
            return 0;
        });
        var to = new Option<string>("--channel") { Description = "The channel to move to", Required = true };
        var moveId = new Argument<string>("machine") { Description = "Machine id (m_…)" };
        var move = new Command("move", "Move a machine to another channel") { moveId, to };
        move.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var m = await api.JsonAsync(HttpMethod.Post, $"/api/v1/machines/{Escape(parse.GetValue(moveId)!)}/move", new JsonObject { ["channel"] = parse.GetValue(to) });
            Console.WriteLine($"{S(m, "id")} is now in {S(m, "channel")}");
            return 0;
        });
        var approveId = new Argument<string>("machine") { Description = "Machine id (m_…)" };
        var approve = new Command("approve-reenroll", "Let a machine's machine-id enroll again without its current credential (a re-imaged machine), " +
            "once, within 24 hours (operator)") { approveId };
        approve.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var m = await api.JsonAsync(HttpMethod.Post, $"/api/v1/machines/{Escape(parse.GetValue(approveId)!)}/approve-reenroll");
            Console.WriteLine($"{S(m, "id")} ({S(m, "hostname")}) may enroll again until {S(m, "reenrollApprovedUntil")}");
            return 0;
        });
        command.Subcommands.Add(show);
        command.Subcommands.Add(move);
        command.Subcommands.Add(approve);
        return command;
    }

    private static Command Channels()
    {
        var json = Cli.Json();
        var command = new Command("channels", "Channels in rollout order, with their promotion policy") { json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var list = await api.JsonAsync(HttpMethod.Get, "/api/v1/channels");
            if (parse.GetValue(json)) { Print(list); return 0; }
            foreach (var c in list.AsArray())
                Console.WriteLine($"{S(c, "position")}  {S(c, "name"),-14} " + (S(c, "position") == "0" ? "releases land here on publish"
                    : c!["promoteAfterSeconds"] is null ? "manual promotion only" : $"auto after {S(c, "promoteAfterSeconds")} s, when >= {S(c, "minApplied")} machines applied and none failed"));
            return 0;
        });
        var name = new Argument<string>("name") { Description = "Channel name (a-z, 0-9, -)" };
        var delay = new Option<long?>("--delay") { Description = "Seconds after entering the previous channel before automatic promotion" };
        var minApplied = new Option<int?>("--min-applied") { Description = "Machines in the previous channel that must report applied (and none failed)" };
        var manual = new Option<bool>("--manual") { Description = "Only manual promotion into this channel" };
        var set = new Command("set", "Create a channel (at the end of the order) or change its promotion policy (admin)") { name, delay, minApplied, manual };
        set.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var body = new JsonObject { ["promoteAfterSeconds"] = parse.GetValue(delay), ["minApplied"] = parse.GetValue(minApplied), ["manual"] = parse.GetValue(manual) ? true : null };
            var c = await api.JsonAsync(HttpMethod.Put, $"/api/v1/channels/{Escape(parse.GetValue(name)!)}", body);
            Console.WriteLine($"channel {S(c, "name")} at position {S(c, "position")}");
            return 0;
        });
        command.Subcommands.Add(set);
        return command;
    }

    // ---- tokens, trust ----

    private static Command Tokens()
    {
        var command = new Command("tokens", "Enrollment tokens (bound to a channel) and API tokens (with a role)");
        var channel = new Option<string>("--channel") { Description = "The channel enrolled machines join", Required = true };
        var maxUses = new Option<int?>("--max-uses") { Description = "How many machines may enroll with it" };
        var expires = new Option<long?>("--expires-in") { Description = "Seconds until it expires" };
        var description = new Option<string?>("--description") { Description = "What it is for" };
        var json = Cli.Json();
        var enroll = new Command("enroll", "Make an enrollment token; it is printed once") { channel, maxUses, expires, description, json };
        enroll.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.JsonAsync(HttpMethod.Post, "/api/v1/enrollment-tokens", new JsonObject
            {
                ["channel"] = parse.GetValue(channel), ["maxUses"] = parse.GetValue(maxUses), ["expiresInSeconds"] = parse.GetValue(expires), ["description"] = parse.GetValue(description),
            });
            if (parse.GetValue(json)) Print(result); else Console.WriteLine(S(result, "token"));
            return 0;
        });
        var role = new Option<string>("--role") { Description = "admin, operator or auditor", Required = true };
        role.AcceptOnlyFromAmong("admin", "operator", "auditor");
        var name = new Option<string>("--name") { Description = "Who or what holds it (shown in the audit log)", Required = true };
        var apiExpires = new Option<long?>("--expires-in") { Description = "Seconds until it expires" };
        var apiJson = Cli.Json();
        var create = new Command("create", "Make an API token with a role (admin only); it is printed once") { role, name, apiExpires, apiJson };
        create.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.JsonAsync(HttpMethod.Post, "/api/v1/api-tokens", new JsonObject { ["role"] = parse.GetValue(role), ["name"] = parse.GetValue(name), ["expiresInSeconds"] = parse.GetValue(apiExpires) });
            if (parse.GetValue(apiJson)) Print(result); else Console.WriteLine(S(result, "token"));
            return 0;
        });
        var listJson = Cli.Json();
        var list = new Command("list", "Enrollment and API tokens (never their secrets)") { listJson };
        list.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var enrollment = await api.JsonAsync(HttpMethod.Get, "/api/v1/enrollment-tokens");
            JsonNode apiTokens;
            try { apiTokens = await api.JsonAsync(HttpMethod.Get, "/api/v1/api-tokens"); }
            catch (ServerRequestException) { apiTokens = new JsonArray(); } // listing API tokens needs admin
            if (parse.GetValue(listJson)) { Print(new JsonObject { ["enrollment"] = enrollment, ["api"] = apiTokens }); return 0; }
            foreach (var t in enrollment.AsArray())
                Console.WriteLine($"{S(t, "id")}  enroll -> {S(t, "channel"),-12} used {S(t, "uses")}/{(t!["maxUses"] is null ? "∞" : S(t, "maxUses"))}{(t["revokedAt"] is null ? "" : " (revoked)")} {S(t, "description")}");
            foreach (var t in apiTokens.AsArray())
                Console.WriteLine($"{S(t, "id")}  {S(t, "role"),-8} {S(t, "name")}{(t!["revokedAt"] is null ? "" : " (revoked)")}");
            return 0;
        });
        var id = new Argument<string>("id") { Description = "Token id (et_… or at_…)" };
        var revoke = new Command("revoke", "Revoke an enrollment token (et_…) or API token (at_…)") { id };
        revoke.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var tokenId = parse.GetValue(id)!;
            var path = tokenId.StartsWith("et_", StringComparison.Ordinal) ? "/api/v1/enrollment-tokens/" : tokenId.StartsWith("at_", StringComparison.Ordinal) ? "/api/v1/api-tokens/"
                : throw new ServerRequestException($"'{tokenId}' is not a token id (et_… or at_…)", ExitCode.Usage);
            (await api.SendAsync(HttpMethod.Delete, path + Escape(tokenId))).Dispose();
            Console.WriteLine($"{tokenId} revoked");
            return 0;
        });
        command.Subcommands.Add(enroll);
        command.Subcommands.Add(create);
        command.Subcommands.Add(list);
        command.Subcommands.Add(revoke);
        return command;
    }

    private static Command Trust()
    {
        var command = new Command("trust", "The publisher keys whose bundles the server accepts");
        var file = new Argument<FileInfo>("public-key.pem") { Description = "A publisher public key (SubjectPublicKeyInfo PEM)" };
        var add = new Command("add", "Trust a publisher key (admin)") { file };
        add.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.JsonAsync(HttpMethod.Post, "/api/v1/keys", new JsonObject { ["pem"] = await File.ReadAllTextAsync(parse.GetValue(file)!.FullName) });
            Console.WriteLine($"trusted {S(result, "id")}");
            return 0;
        });
        var json = Cli.Json();
        var list = new Command("list", "Trusted and retired keys") { json };
        list.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var keys = await api.JsonAsync(HttpMethod.Get, "/api/v1/keys");
            if (parse.GetValue(json)) Print(keys);
            else foreach (var k in keys.AsArray()) Console.WriteLine($"{S(k, "id")}  {S(k, "state"),-8} added {S(k, "addedAt")}");
            return 0;
        });
        var id = new Argument<string>("key-id") { Description = "The key id (32 hex digits)" };
        var retire = new Command("retire", "Retire a key: its bundles are refused from now on (one-way; admin)") { id };
        retire.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            (await api.SendAsync(HttpMethod.Post, $"/api/v1/keys/{Escape(parse.GetValue(id)!)}/retire")).Dispose();
            Console.WriteLine($"retired {parse.GetValue(id)}");
            return 0;
        });
        var document = new Argument<FileInfo>("trust-root.json") { Description = "A trust-root update signed by a root key (kintsugi keys sign-root)" };
        var trustRoot = new Command("root", "Publish a signed trust-root update: agents apply it at their next check-in (new keys, retirements); " +
            "this server applies it to its own keys (admin)") { document };
        trustRoot.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.JsonAsync(HttpMethod.Post, "/api/v1/trust-root", new JsonObject { ["document"] = await File.ReadAllTextAsync(parse.GetValue(document)!.FullName) });
            Console.WriteLine($"trust-root version {S(result, "version")} (root key {S(result, "rootKey")}) published");
            foreach (var change in result["changes"]!.AsArray()) Console.WriteLine($"  {change}");
            return 0;
        });
        command.Subcommands.Add(add);
        command.Subcommands.Add(list);
        command.Subcommands.Add(retire);
        command.Subcommands.Add(trustRoot);
        return command;
    }

    // ---- reports, audit, transfer ----

    private static Command Report()
    {
        var kind = new Argument<string>("report") { Description = "fleet, exposure, compliance or openvex (the fleet's OpenVEX document for scanners)" };
        kind.AcceptOnlyFromAmong("fleet", "exposure", "compliance", "openvex");
        var format = new Option<string>("--format") { Description = "json (default), or for compliance also csv or html", DefaultValueFactory = _ => "json" };
        format.AcceptOnlyFromAmong("json", "csv", "html");
        var severity = new Option<string?>("--severity") { Description = "compliance: minimum CVE severity (default high)" };
        var cve = new Option<string?>("--cve") { Description = "exposure: only this CVE" };
        var output = new Option<FileInfo?>("--output", "-o") { Description = "Write to this file instead of standard output" };
        var command = new Command("report", "Fleet status, per-CVE exposure, the PCI DSS 6.3.3 30-day compliance report, or the fleet's OpenVEX document") { kind, format, severity, cve, output };
        command.WithExamples("kintsugi server report exposure --cve CVE-2024-1086", "kintsugi server report compliance --format html -o pci.html",
            "kintsugi server report openvex -o fleet.openvex.json");
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var report = parse.GetValue(kind)!;
            var fmt = parse.GetValue(format)!;
            if (fmt != "json" && report != "compliance") throw new ServerRequestException("only the compliance report has csv and html forms", ExitCode.Usage);
            var query = new List<string>();
            if (report == "compliance") { query.Add($"format={fmt}"); if (parse.GetValue(severity) is { } s) query.Add($"severity={Escape(s)}"); }
            if (report == "exposure" && parse.GetValue(cve) is { } c) query.Add($"cve={Escape(c)}");
            using var response = await api.SendAsync(HttpMethod.Get, $"/api/v1/reports/{report}" + (query.Count > 0 ? "?" + string.Join("&", query) : ""));
            var text = await response.Content.ReadAsStringAsync();
            if (parse.GetValue(output) is { } file) { await File.WriteAllTextAsync(file.FullName, text); Cli.Progress($"wrote {file.FullName}"); }
            else Console.Write(text.EndsWith('\n') ? text : text + "\n");
            return 0;
        });
        return command;
    }

    private static Command Audit()
    {
        var command = new Command("audit", "The server's append-only, hash-chained audit log");
        var json = Cli.Json();
        var after = new Option<long>("--after") { Description = "Only events after this sequence number" };
        var limit = new Option<int>("--limit") { Description = "At most this many events", DefaultValueFactory = _ => 1000 };
        var log = new Command("log", "Print audit events in order: who, what, when, from where") { json, after, limit };
        log.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var events = await api.JsonAsync(HttpMethod.Get, $"/api/v1/audit?after={parse.GetValue(after)}&limit={parse.GetValue(limit)}");
            if (parse.GetValue(json)) { Print(events); return 0; }
            foreach (var e in events.AsArray())
                Console.WriteLine($"{S(e, "seq"),6} {S(e, "at")} {S(e, "actor")} [{S(e, "address")}] {S(e, "action")} {S(e, "subject")} {S(e, "detail")}");
            return 0;
        });
        var verifyJson = Cli.Json();
        var verify = new Command("verify", "Verify the hash chain: any edited, inserted or deleted event is reported (exit 3)") { verifyJson };
        verify.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.JsonAsync(HttpMethod.Get, "/api/v1/audit/verify");
            var intact = result["intact"]!.GetValue<bool>();
            if (parse.GetValue(verifyJson)) Print(result);
            else
            {
                Console.WriteLine(intact ? $"audit chain intact: {S(result, "events")} events, head {S(result, "headSeq")} {S(result, "headHash")}" : "audit chain BROKEN:");
                foreach (var p in result["problems"]!.AsArray()) Console.WriteLine($"  event {S(p, "seq")}: {S(p, "problem")}");
            }
            return intact ? 0 : (int)ExitCode.InputRefused;
        });
        command.Subcommands.Add(log);
        command.Subcommands.Add(verify);
        return command;
    }

    private static Command Export()
    {
        var output = new Option<FileInfo>("--output", "-o") { Description = "The archive to write (tar)", Required = true };
        var build = new Option<string?>("--build") { Description = "Only this kernel build-id" };
        var command = new Command("export", "Export the good releases' signed bundles to a file, for an air-gapped server") { output, build };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var file = parse.GetValue(output)!;
            using var response = await api.SendAsync(HttpMethod.Get, "/api/v1/export" + (parse.GetValue(build) is { } b ? $"?build={Escape(b)}" : ""));
            var temporary = file.FullName + ".part";
            await using (var stream = File.Create(temporary)) await response.Content.CopyToAsync(stream);
            File.Move(temporary, file.FullName, overwrite: true);
            Cli.Progress($"wrote {file.FullName} ({new FileInfo(file.FullName).Length} bytes)");
            return 0;
        });
        return command;
    }

    private static Command Import()
    {
        var file = new Argument<FileInfo>("archive") { Description = "An archive from kintsugi server export" };
        var json = Cli.Json();
        var command = new Command("import", "Import an export into this server; every bundle must verify against this server's trusted keys") { file, json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var path = parse.GetValue(file)!;
            if (!path.Exists) throw new ServerRequestException($"{path.FullName} does not exist", ExitCode.NotFound);
            await using var stream = path.OpenRead();
            using var content = new StreamContent(stream);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/x-tar");
            using var response = await api.SendAsync(HttpMethod.Post, "/api/v1/import", content);
            var result = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            if (parse.GetValue(json)) Print(result);
            else
            {
                Console.WriteLine($"imported {S(result, "imported")}, already present {S(result, "alreadyPresent")}, refused {S(result, "refused")}");
                foreach (var r in result["releases"]!.AsArray().Where(r => r!["refused"] is not null)) Console.WriteLine($"  refused {S(r, "bundle")}: {S(r, "refused")}");
            }
            return result["refused"]!.GetValue<int>() > 0 ? (int)ExitCode.InputRefused : 0;
        });
        return command;
    }
}
