using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Kintsugi.Protocol;
using Kintsugi.Protocol.Operator;

namespace Kintsugi.Cli;

/// <summary>The patch server could not be reached, or refused a request.</summary>
internal sealed class ServerRequestException(string message, ExitCode code, Exception? inner = null)
    : KintsugiException(message, inner)
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
    private static readonly Option<string?> Url = new("--url")
    { Description = "Server URL (default $KINTSUGI_SERVER_URL, else https://localhost:8443)", Recursive = true };
    private static readonly Option<string?> Token = new("--token")
    {
        Description = "API token (default $KINTSUGI_SERVER_TOKEN, or the file in $KINTSUGI_SERVER_TOKEN_FILE)",
        Recursive = true
    };
    private static readonly Option<string?> Ca = new("--ca")
    {
        Description =
        "PEM certificate to trust for the server: its own (e.g. its generated tls/server.crt, pinned) or the CA that " +
        "issued it; only these are trusted and the certificate must name the host (default $KINTSUGI_SERVER_CA; " +
        "else the system's CAs)",
        Recursive = true
    };

    public static Command Create()
    {
        var server = new Command("server",
            "The self-hosted patch server: run it, publish, promote, revoke, inspect the fleet, reports, audit")
            { Url, Token, Ca };
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
        var command = new Command("run",
            "Run the patch server (starts kintsugi-server run with these options; --help lists them)")
        { TreatUnmatchedTokensAsErrors = false };
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
            using var process = Process.Start(start)
                ?? throw new ServerRequestException($"cannot start {binary.File}", ExitCode.Environment);
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
        foreach (var dir in new[] { here }.Concat((Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)))
            if (File.Exists(Path.Combine(dir, "kintsugi-server"))) return (Path.Combine(dir, "kintsugi-server"), []);
        throw new ServerRequestException($"kintsugi-server is not beside kintsugi ({here}) nor on PATH; in a " +
            "checkout, ./kintsugi builds both into artifacts/bin; elsewhere install it beside kintsugi or set " +
            "KINTSUGI_SERVER_BINARY", ExitCode.Environment);
    }

    // ---- the HTTP client ----

    private sealed class Api(HttpClient http, Uri baseAddress, PinnedServerCertificates? pin) : IDisposable
    {
        public Uri BaseAddress { get; } = baseAddress;

        public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, HttpContent? content = null)
        {
            using var request = new HttpRequestMessage(method, path) { Content = content };
            HttpResponseMessage response;
            try { response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead); }
            catch (HttpRequestException e)
            {
                throw new ServerRequestException(
                    $"cannot reach the server at {BaseAddress}: {TransportFailure.Describe(e)}" +
                    (e.InnerException is not System.Security.Authentication.AuthenticationException ? ""
                        : pin?.LastRefusal is { } why ? $" ({why})"
                        : " (its certificate is not trusted: pass --ca with its tls/server.crt)"),
                        ExitCode.Environment, e);
            }
            catch (TaskCanceledException e)
            {
                throw new ServerRequestException($"the server at {BaseAddress} did not " +
                "answer in time", ExitCode.Environment, e);
            }
            if (response.IsSuccessStatusCode) return response;
            var body = await response.Content.ReadAsStringAsync();
            string detail;
            try { detail = JsonSerializer.Deserialize(body, ProtocolJson.Default.ProblemDocument)?.Detail ?? body; }
            catch (JsonException) { detail = body.Length > 300 ? body[..300] : body; }
            var code = response.StatusCode switch
            {
                HttpStatusCode.NotFound => ExitCode.NotFound,
                HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden or HttpStatusCode.TooManyRequests
                    or HttpStatusCode.ServiceUnavailable => ExitCode.Environment,
                >= HttpStatusCode.InternalServerError => ExitCode.Environment,
                _ => ExitCode.InputRefused,
            };
            response.Dispose();
            throw new ServerRequestException($"{method} {path}: {(int)response.StatusCode} {detail}", code);
        }

        public async Task<T> GetAsync<T>(string path, JsonTypeInfo<T> reply)
        {
            using var response = await SendAsync(HttpMethod.Get, path);
            return await ReadAsync(response, reply);
        }

        /// <summary>Sends <paramref name="body"/> as JSON; reads the reply as <paramref name="reply"/>.</summary>
        public async Task<TReply> SendAsync<TBody, TReply>(HttpMethod method, string path, TBody body,
            JsonTypeInfo<TBody> request, JsonTypeInfo<TReply> reply)
        {
            using var content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(body, request));
            content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
            using var response = await SendAsync(method, path, content);
            return await ReadAsync(response, reply);
        }

        /// <summary>A successful reply as the operator API's type for it (Kintsugi.Protocol.Operator).</summary>
        public static async Task<T> ReadAsync<T>(HttpResponseMessage response, JsonTypeInfo<T> reply)
        {
            var text = await response.Content.ReadAsStringAsync();
            try { return JsonSerializer.Deserialize(text, reply) ?? throw new JsonException("the reply is JSON null"); }
            catch (JsonException e)
            {
                var request = response.RequestMessage;
                throw new ServerRequestException($"{request?.Method} {request?.RequestUri?.PathAndQuery}: the reply " +
                    $"is not the {typeof(T).Name} this kintsugi ({Cli.Version}) reads: {e.Message} (is the server of " +
                    "another version?)", ExitCode.Environment, e);
            }
        }

        public void Dispose() => http.Dispose();
    }

    private static Api Connect(ParseResult parse, bool needToken = true)
    {
        var url = parse.GetValue(Url) ?? Environment.GetEnvironmentVariable("KINTSUGI_SERVER_URL")
            ?? "https://localhost:8443";
        if (!Uri.TryCreate(url, UriKind.Absolute, out var baseAddress) || baseAddress.Scheme is not ("https" or "http"))
            throw new ServerRequestException($"'{url}' is not a server URL (https://host:port)", ExitCode.Usage);
        var token = parse.GetValue(Token) ?? Environment.GetEnvironmentVariable("KINTSUGI_SERVER_TOKEN");
        if (token is null && Environment.GetEnvironmentVariable("KINTSUGI_SERVER_TOKEN_FILE") is { Length: > 0 } file)
            token = File.ReadAllText(file).Trim();
        if (token is null && needToken)
            throw new ServerRequestException("an API token is needed: --token, KINTSUGI_SERVER_TOKEN or " +
            "KINTSUGI_SERVER_TOKEN_FILE", ExitCode.Usage);
        var handler = new SocketsHttpHandler();
        PinnedServerCertificates? pin = null;
        if ((parse.GetValue(Ca) ?? Environment.GetEnvironmentVariable("KINTSUGI_SERVER_CA")) is { Length: > 0 } caPath)
        {
            var trusted = new X509Certificate2Collection();
            try { trusted.ImportFromPemFile(caPath); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException
                or System.Security.Cryptography.CryptographicException)
            {
                throw new ServerRequestException($"cannot read the server certificate {caPath}: {e.Message}",
                    ExitCode.InputRefused, e);
            }
            if (trusted.Count == 0)
                throw new ServerRequestException($"{caPath} holds no PEM certificate", ExitCode.InputRefused);
            pin = new PinnedServerCertificates(trusted);
            handler.SslOptions.RemoteCertificateValidationCallback = pin.Validate;
        }
        var http = new HttpClient(handler) { BaseAddress = baseAddress, Timeout = TimeSpan.FromMinutes(5) };
        http.DefaultRequestHeaders.UserAgent.ParseAdd($"kintsugi-cli/{Cli.Version}");
        if (token is not null)
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return new Api(http, baseAddress, pin);
    }

    private static string Escape(string segment) => Uri.EscapeDataString(segment);

    private static void Print<T>(T reply, JsonTypeInfo<T> type) =>
        Console.WriteLine(JsonSerializer.Serialize(reply, type));

    private static string Show<T>(T? value) => value?.ToString() ?? "-";

    /// <summary>A time as the server's JSON spells it (ISO 8601), or "-".</summary>
    private static string Show(DateTimeOffset? time) =>
        time is { } t ? JsonSerializer.Serialize(t, OperatorJson.Default.DateTimeOffset).Trim('"') : "-";

    private static OperatorJson Types => OperatorJson.Default;

    // ---- releases ----

    private static Command Publish()
    {
        var files = new Argument<FileInfo[]>("bundle")
        { Description = "Signed bundle files (kintsugi bundle sign)", Arity = ArgumentArity.OneOrMore };
        var json = Cli.Json();
        var command = new Command("publish",
            "Publish signed bundles; the server verifies them against the fleet's trusted publisher keys. Each lands " +
            "in the first channel.") { files, json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var results = new List<PublishResult>();
            foreach (var file in parse.GetValue(files)!)
            {
                if (!file.Exists)
                    throw new ServerRequestException($"{file.FullName} does not exist", ExitCode.NotFound);
                using var content = new ByteArrayContent(await File.ReadAllBytesAsync(file.FullName));
                content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                using var response = await api.SendAsync(HttpMethod.Post, "/api/v1/releases", content);
                var result = await Api.ReadAsync(response, Types.PublishResult);
                results.Add(result);
                var r = result.Release;
                if (!parse.GetValue(json))
                    Console.WriteLine($"{(result.Created ? "published" : "already published")} {r.Id}: " +
                                      $"{r.Target()} level {r.Level} in " +
                                      $"{Show(r.Channels.FirstOrDefault()?.Channel)}");
            }
            if (parse.GetValue(json)) Print<IReadOnlyList<PublishResult>>(results, Types.IReadOnlyListPublishResult);
            return 0;
        });
        return command;
    }

    private static Command Releases()
    {
        var json = Cli.Json();
        var build = new Option<string?>("--build")
        { Description = "Only this build-id (a kernel's or a user-space object's)" };
        var command = new Command("releases",
            "List releases: target (kernel or user-space object), level, channels, health, revocation") { json, build };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var query = parse.GetValue(build) is { } b ? $"?build={Escape(b)}" : "";
            var list = await api.GetAsync("/api/v1/releases" + query, Types.IReadOnlyListReleaseView);
            if (parse.GetValue(json)) { Print(list, Types.IReadOnlyListReleaseView); return 0; }
            var table = Tables.Create("release", "target", "level", "channels", "applied", "failed", "status");
            foreach (var r in list)
                table.Row(r.Id, r.Target(), Show(r.Level), string.Join(",", r.Channels.Select(c => c.Channel)),
                    Show(r.Health.Applied),
                    Show(r.Health.Failed), r.Revoked is { } revoked ? $"revoked: {revoked.Reason}" : "active");
            Tables.Write(table);
            return 0;
        });
        return command;
    }

    private static Argument<string> ReleaseArgument() =>
        new("release") { Description = "Release id (r_…) or bundle sha256" };

    private static Command Promote()
    {
        var release = ReleaseArgument();
        var channel = new Option<string?>("--channel")
        { Description = "Target channel (default: the next one); earlier channels are included" };
        var reason = new Option<string?>("--reason") { Description = "Why (recorded in the audit log)" };
        var json = Cli.Json();
        var command = new Command("promote", "Promote a release manually (bypasses the delay and health gate; audited)")
            { release, channel, reason, json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.SendAsync(HttpMethod.Post,
                $"/api/v1/releases/{Escape(parse.GetValue(release)!)}/promote",
                new PromoteRequest(parse.GetValue(channel), parse.GetValue(reason)), Types.PromoteRequest,
                    Types.PromoteResult);
            if (parse.GetValue(json)) Print(result, Types.PromoteResult);
            else Console.WriteLine($"{result.Release.Id} promoted to {string.Join(", ", result.PromotedTo)}");
            return 0;
        });
        return command;
    }

    private static Command Revoke()
    {
        var release = ReleaseArgument();
        var reason = new Option<string>("--reason")
        { Description = "Why (required; recorded in the audit log)", Required = true };
        var json = Cli.Json();
        var command = new Command("revoke",
            "Revoke a release fleet-wide: agents return to the previous good level (or remove) within the events wait")
            { release, reason, json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.SendAsync(HttpMethod.Post,
                $"/api/v1/releases/{Escape(parse.GetValue(release)!)}/revoke",
                new RevokeRequest(parse.GetValue(reason)!), Types.RevokeRequest, Types.ReleaseView);
            if (parse.GetValue(json)) Print(result, Types.ReleaseView);
            else Console.WriteLine($"{result.Id} revoked ({result.Target()} level {result.Level})");
            return 0;
        });
        return command;
    }

    private static Command MetadataCommand()
    {
        var file = new Argument<FileInfo>("metadata")
        { Description = "Signed release metadata (kintsugi bundle metadata)" };
        var json = Cli.Json();
        var publish = new Command("publish",
            "Store the publisher's signed release metadata for its kernel build or user-space object; the levels it " +
            "revokes are revoked fleet-wide and agents receive it at their next check-in") { file, json };
        publish.Action = Cli.Run(async parse =>
        {
            var path = parse.GetValue(file)!;
            if (!path.Exists) throw new ServerRequestException($"{path.FullName} does not exist", ExitCode.NotFound);
            using var api = Connect(parse);
            var request = new ReleaseMetadataRequest(await File.ReadAllTextAsync(path.FullName));
            var m = await api.SendAsync(HttpMethod.Post, "/api/v1/metadata", request, Types.ReleaseMetadataRequest,
                Types.ReleaseMetadataView);
            if (parse.GetValue(json)) Print(m, Types.ReleaseMetadataView);
            else Console.WriteLine($"release metadata version {m.Version} for {m.Target()} ({m.BuildId}): " +
                                   $"current level {m.CurrentLevel}, minimum {m.MinimumLevel}, revoked " +
                                   $"[{string.Join(",", m.RevokedLevels)}]; releases revoked now: " +
                                   $"{m.RevokedReleases.Count}");
            return 0;
        });
        var command = new Command("metadata",
            "Signed release metadata per kernel build (docs/bundle-format.md): what agents need before they roll " +
            "back or remove");
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
        var command = new Command("machines", "The machine inventory: kernel, build-id, level, state, last check-in")
            { json, channel, state, build };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var query = string.Join("&",
                new[] { ("channel", parse.GetValue(channel)), ("state", parse.GetValue(state)),
                ("build", parse.GetValue(build)) }
                .Where(p => p.Item2 is not null).Select(p => $"{p.Item1}={Escape(p.Item2!)}"));
            var list = await api.GetAsync("/api/v1/machines" + (query.Length > 0 ? "?" + query : ""),
                Types.IReadOnlyListMachineView);
            if (parse.GetValue(json)) { Print(list, Types.IReadOnlyListMachineView); return 0; }
            var table = Tables.Create("machine", "hostname", "channel", "kernel", "level", "state", "last check-in");
            foreach (var m in list)
                table.Row(m.Id, m.Hostname, m.Channel, m.KernelRelease, Show(m.Level), Show(m.State),
                    Show(m.LastCheckIn) + (m.Stale ? " (stale)" : ""));
            Tables.Write(table);
            return 0;
        });
        var id = new Argument<string>("machine") { Description = "Machine id (m_…)" };
        var show = new Command("show", "One machine, with everything it last reported") { id, Cli.Json() };
        show.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            Print(await api.GetAsync($"/api/v1/machines/{Escape(parse.GetValue(id)!)}", Types.MachineView),
                Types.MachineView);
            return 0;
        });
        var to = new Option<string>("--channel") { Description = "The channel to move to", Required = true };
        var moveId = new Argument<string>("machine") { Description = "Machine id (m_…)" };
        var move = new Command("move", "Move a machine to another channel") { moveId, to };
        move.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var m = await api.SendAsync(HttpMethod.Post, $"/api/v1/machines/{Escape(parse.GetValue(moveId)!)}/move",
                new MoveMachineRequest(parse.GetValue(to)!), Types.MoveMachineRequest, Types.MachineView);
            Console.WriteLine($"{m.Id} is now in {m.Channel}");
            return 0;
        });
        var approveId = new Argument<string>("machine") { Description = "Machine id (m_…)" };
        var approve = new Command("approve-reenroll",
            "Let a machine's machine-id enroll again without its current credential (a re-imaged machine), " +
            "once, within 24 hours (operator)") { approveId };
        approve.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var response = await api.SendAsync(HttpMethod.Post,
                $"/api/v1/machines/{Escape(parse.GetValue(approveId)!)}/approve-reenroll");
            var m = await Api.ReadAsync(response, Types.MachineView);
            Console.WriteLine($"{m.Id} ({m.Hostname}) may enroll again until {m.ReenrollApprovedUntil:u}");
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
            var list = await api.GetAsync("/api/v1/channels", Types.IReadOnlyListChannelView);
            if (parse.GetValue(json)) { Print(list, Types.IReadOnlyListChannelView); return 0; }
            var table = Tables.Create("position", "channel", "promotion");
            foreach (var c in list)
                table.Row(Show(c.Position), c.Name, c.Position == 0 ? "releases land here on publish"
                    : c.PromoteAfterSeconds is not { } after ? "manual promotion only"
                    : $"auto after {after} s, when >= {c.MinApplied} machines applied and none failed");
            Tables.Write(table);
            return 0;
        });
        var name = new Argument<string>("name") { Description = "Channel name (a-z, 0-9, -)" };
        var delay = new Option<long?>("--delay")
        { Description = "Seconds after entering the previous channel before automatic promotion" };
        var minApplied = new Option<int?>("--min-applied")
        { Description = "Machines in the previous channel that must report applied (and none failed)" };
        var manual = new Option<bool>("--manual") { Description = "Only manual promotion into this channel" };
        var set = new Command("set",
            "Create a channel (at the end of the order) or change its promotion policy (admin)")
            { name, delay, minApplied, manual };
        set.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var body = new ChannelRequest(parse.GetValue(delay), parse.GetValue(minApplied), parse.GetValue(manual)
                ? true : null);
            var c = await api.SendAsync(HttpMethod.Put, $"/api/v1/channels/{Escape(parse.GetValue(name)!)}", body,
                Types.ChannelRequest, Types.ChannelView);
            Console.WriteLine($"channel {c.Name} at position {c.Position}");
            return 0;
        });
        command.Subcommands.Add(set);
        return command;
    }

    // ---- tokens, trust ----

    private static Command Tokens()
    {
        var command = new Command("tokens", "Enrollment tokens (bound to a channel) and API tokens (with a role)");
        var channel = new Option<string>("--channel")
        { Description = "The channel enrolled machines join", Required = true };
        var maxUses = new Option<int?>("--max-uses") { Description = "How many machines may enroll with it" };
        var expires = new Option<long?>("--expires-in") { Description = "Seconds until it expires" };
        var description = new Option<string?>("--description") { Description = "What it is for" };
        var json = Cli.Json();
        var enroll = new Command("enroll", "Make an enrollment token; it is printed once")
            { channel, maxUses, expires, description, json };
        enroll.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var request = new EnrollmentTokenRequest(parse.GetValue(channel)!, parse.GetValue(description),
                parse.GetValue(expires), parse.GetValue(maxUses));
            var result = await api.SendAsync(HttpMethod.Post, "/api/v1/enrollment-tokens", request,
                Types.EnrollmentTokenRequest, Types.IssuedEnrollmentToken);
            if (parse.GetValue(json)) Print(result, Types.IssuedEnrollmentToken); else Console.WriteLine(result.Token);
            return 0;
        });
        var role = new Option<string>("--role") { Description = "admin, operator or auditor", Required = true };
        role.AcceptOnlyFromAmong("admin", "operator", "auditor");
        var name = new Option<string>("--name")
        { Description = "Who or what holds it (shown in the audit log)", Required = true };
        var apiExpires = new Option<long?>("--expires-in") { Description = "Seconds until it expires" };
        var apiJson = Cli.Json();
        var create = new Command("create", "Make an API token with a role (admin only); it is printed once")
            { role, name, apiExpires, apiJson };
        create.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var request = new ApiTokenRequest(parse.GetValue(role)!, parse.GetValue(name)!, parse.GetValue(apiExpires));
            var result = await api.SendAsync(HttpMethod.Post, "/api/v1/api-tokens", request, Types.ApiTokenRequest,
                Types.IssuedApiToken);
            if (parse.GetValue(apiJson)) Print(result, Types.IssuedApiToken); else Console.WriteLine(result.Token);
            return 0;
        });
        var listJson = Cli.Json();
        var list = new Command("list", "Enrollment and API tokens (never their secrets)") { listJson };
        list.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var enrollment = await api.GetAsync("/api/v1/enrollment-tokens", Types.IReadOnlyListEnrollmentTokenView);
            IReadOnlyList<ApiTokenView> apiTokens;
            try { apiTokens = await api.GetAsync("/api/v1/api-tokens", Types.IReadOnlyListApiTokenView); }
            catch (ServerRequestException) { apiTokens = []; } // listing API tokens needs admin
            if (parse.GetValue(listJson))
            {
                Print(new TokenListing(enrollment, apiTokens),
                ServerCliJson.Default.TokenListing); return 0;
            }
            var table = Tables.Create("token", "kind", "role or channel", "uses", "state", "name or description");
            foreach (var t in enrollment)
                table.Row(t.Id, "enrollment", t.Channel, $"{t.Uses}/{(t.MaxUses is { } most ? most.ToString() : "∞")}",
                    t.RevokedAt is null ? "active" : "revoked", Show(t.Description));
            foreach (var t in apiTokens)
                table.Row(t.Id, "api", Show(t.Role), "-", t.RevokedAt is null ? "active" : "revoked", t.Name);
            Tables.Write(table);
            return 0;
        });
        var id = new Argument<string>("id") { Description = "Token id (et_… or at_…)" };
        var revoke = new Command("revoke", "Revoke an enrollment token (et_…) or API token (at_…)") { id };
        revoke.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var tokenId = parse.GetValue(id)!;
            var path = tokenId.StartsWith("et_", StringComparison.Ordinal) ? "/api/v1/enrollment-tokens/"
                : tokenId.StartsWith("at_", StringComparison.Ordinal) ? "/api/v1/api-tokens/"
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
        var file = new Argument<FileInfo>("public-key.pem")
        { Description = "A publisher public key (SubjectPublicKeyInfo PEM)" };
        var add = new Command("add", "Trust a publisher key (admin)") { file };
        add.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var request = new PublisherKeyRequest(await File.ReadAllTextAsync(parse.GetValue(file)!.FullName));
            var result = await api.SendAsync(HttpMethod.Post, "/api/v1/keys", request, Types.PublisherKeyRequest,
                Types.PublisherKeyView);
            Console.WriteLine($"trusted {result.Id}");
            return 0;
        });
        var json = Cli.Json();
        var list = new Command("list", "Trusted and retired keys") { json };
        list.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var keys = await api.GetAsync("/api/v1/keys", Types.IReadOnlyListPublisherKeyView);
            if (parse.GetValue(json)) Print(keys, Types.IReadOnlyListPublisherKeyView);
            else
            {
                var table = Tables.Create("key", "state", "added");
                foreach (var k in keys) table.Row(Show(k.Id), Show(k.State), Show(k.AddedAt));
                Tables.Write(table);
            }
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
        var document = new Argument<FileInfo>("trust-root.json")
        { Description = "A trust-root update signed by a root key (kintsugi keys sign-root)" };
        var trustRoot = new Command("root",
            "Publish a signed trust-root update: agents apply it at their next check-in (new keys, retirements); " +
            "this server applies it to its own keys (admin)") { document };
        trustRoot.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.SendAsync(HttpMethod.Post, "/api/v1/trust-root",
                new TrustRootRequest(await File.ReadAllTextAsync(parse.GetValue(document)!.FullName)),
                Types.TrustRootRequest, Types.TrustRootView);
            Console.WriteLine($"trust-root version {result.Version} (root key {result.RootKey}) published");
            foreach (var change in result.Changes) Console.WriteLine($"  {change}");
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
        var kind = new Argument<string>("report")
        { Description = "fleet, exposure, compliance or openvex (the fleet's OpenVEX document for scanners)" };
        kind.AcceptOnlyFromAmong("fleet", "exposure", "compliance", "openvex");
        var format = new Option<string>("--format")
        { Description = "json (default), or for compliance also csv or html", DefaultValueFactory = _ => "json" };
        format.AcceptOnlyFromAmong("json", "csv", "html");
        var severity = new Option<string?>("--severity")
        { Description = "compliance: minimum CVE severity (default high)" };
        var cve = new Option<string?>("--cve") { Description = "exposure: only this CVE" };
        var output = new Option<FileInfo?>("--output", "-o")
        { Description = "Write to this file instead of standard output" };
        var command = new Command("report",
            "Fleet status, per-CVE exposure, the PCI DSS 6.3.3 30-day compliance report, or the fleet's OpenVEX " +
            "document") { kind, format, severity, cve, output };
        command.WithExamples("kintsugi server report exposure --cve CVE-2024-1086",
            "kintsugi server report compliance --format html -o pci.html",
            "kintsugi server report openvex -o fleet.openvex.json");
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var report = parse.GetValue(kind)!;
            var fmt = parse.GetValue(format)!;
            if (fmt != "json" && report != "compliance")
                throw new ServerRequestException("only the compliance report has csv and html forms", ExitCode.Usage);
            var query = new List<string>();
            if (report == "compliance")
            {
                query.Add($"format={fmt}");
                if (parse.GetValue(severity) is { } s) query.Add($"severity={Escape(s)}");
            }
            if (report == "exposure" && parse.GetValue(cve) is { } c) query.Add($"cve={Escape(c)}");
            using var response = await api.SendAsync(HttpMethod.Get, $"/api/v1/reports/{report}"
                + (query.Count > 0 ? "?" + string.Join("&", query) : ""));
            var text = await response.Content.ReadAsStringAsync();
            if (parse.GetValue(output) is { } file)
            {
                await File.WriteAllTextAsync(file.FullName, text);
                Cli.Progress($"wrote {file.FullName}");
            }
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
        var limit = new Option<int>("--limit")
        { Description = "At most this many events", DefaultValueFactory = _ => 1000 };
        var log = new Command("log", "Print audit events in order: who, what, when, from where") { json, after, limit };
        log.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var events =
                await api.GetAsync($"/api/v1/audit?after={parse.GetValue(after)}&limit={parse.GetValue(limit)}",
                Types.IReadOnlyListAuditEvent);
            if (parse.GetValue(json)) { Print(events, Types.IReadOnlyListAuditEvent); return 0; }
            foreach (var e in events)
                Console.WriteLine($"{e.Seq,6} {Show(e.At)} {e.Actor} [{Show(e.Address)}] {e.Action} {e.Subject} " +
                    $"{e.Detail}");
            return 0;
        });
        var verifyJson = Cli.Json();
        var verify = new Command("verify",
            "Verify the hash chain: any edited, inserted or deleted event is reported (exit 3)") { verifyJson };
        verify.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var result = await api.GetAsync("/api/v1/audit/verify", Types.AuditVerification);
            if (parse.GetValue(verifyJson)) Print(result, Types.AuditVerification);
            else
            {
                Console.WriteLine(result.Intact
                    ? $"audit chain intact: {result.Events} events, head {result.HeadSeq} {result.HeadHash}"
                    : "audit chain BROKEN:");
                foreach (var p in result.Problems) Console.WriteLine($"  event {p.Seq}: {p.Problem}");
            }
            return result.Intact ? 0 : (int)ExitCode.InputRefused;
        });
        command.Subcommands.Add(log);
        command.Subcommands.Add(verify);
        return command;
    }

    private static Command Export()
    {
        var output = new Option<FileInfo>("--output", "-o")
        { Description = "The archive to write (tar)", Required = true };
        var build = new Option<string?>("--build")
        { Description = "Only this build-id (a kernel's or a user-space object's)" };
        var command = new Command("export",
            "Export the good releases' signed bundles to a file, for an air-gapped server") { output, build };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var file = parse.GetValue(output)!;
            using var response = await api.SendAsync(HttpMethod.Get, "/api/v1/export"
                + (parse.GetValue(build) is { } b ? $"?build={Escape(b)}" : ""));
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
        var command = new Command("import",
            "Import an export into this server; every bundle must verify against this server's trusted keys")
            { file, json };
        command.Action = Cli.Run(async parse =>
        {
            using var api = Connect(parse);
            var path = parse.GetValue(file)!;
            if (!path.Exists) throw new ServerRequestException($"{path.FullName} does not exist", ExitCode.NotFound);
            await using var stream = path.OpenRead();
            using var content = new StreamContent(stream);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/x-tar");
            using var response = await api.SendAsync(HttpMethod.Post, "/api/v1/import", content);
            var result = await Api.ReadAsync(response, Types.ImportResult);
            if (parse.GetValue(json)) Print(result, Types.ImportResult);
            else
            {
                Console.WriteLine($"imported {result.Imported}, already present {result.AlreadyPresent}, refused " +
                    $"{result.Refused}; revoked {result.Revoked} as the exporting server had");
                foreach (var r in result.Releases.Where(r => r.Refused is not null))
                    Console.WriteLine($"  refused {r.Bundle}: {r.Refused}");
                foreach (var m in result.Metadata ?? [])
                    Console.WriteLine(m.Stored ? $"  release metadata of {m.BuildId}: version {m.Version} stored"
                        : $"  release metadata of {m.BuildId} version {m.Version} not stored: " +
                          (m.Refused ?? "already here"));
            }
            return result.Refused > 0 ? (int)ExitCode.InputRefused : 0;
        });
        return command;
    }
}

/// <summary><c>kintsugi server tokens list --json</c>: both kinds of token.</summary>
internal sealed record TokenListing(IReadOnlyList<EnrollmentTokenView> Enrollment, IReadOnlyList<ApiTokenView> Api);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(TokenListing))]
internal sealed partial class ServerCliJson : JsonSerializerContext;
