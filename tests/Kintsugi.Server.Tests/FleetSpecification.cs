using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Protocol;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>The server's behaviour through its real HTTP API, run once on SQLite and once on PostgreSQL.</summary>
public abstract class FleetSpecification(Backend backend)
{
    private Task<TestServer> StartAsync(Func<ServerOptions, ServerOptions>? configure = null) =>
        TestServer.StartAsync(backend, configure);

    private static ByteArrayContent Octets(byte[] bytes) =>
        new(bytes) { Headers = { ContentType = new MediaTypeHeaderValue("application/octet-stream") } };

    [Fact]
    public async Task Publish_refuses_a_bundle_signed_by_a_key_the_fleet_does_not_trust()
    {
        await using var server = await StartAsync();
        using var stranger = PublisherKey.Generate();
        var response =
            await server.Admin.PostAsync("/api/v1/releases", Octets(Kernels.Bundle(stranger, Kernels.Debian61, 1)));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains(stranger.Id.ToString(),
            (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("detail").GetString());
        Assert.Empty((await server.GetJsonAsync("/api/v1/releases")).EnumerateArray());
    }

    [Fact]
    public async Task Publish_refuses_a_bundle_altered_after_signing()
    {
        await using var server = await StartAsync();
        var bundle = Kernels.Bundle(server.Publisher, Kernels.Debian61, 1);
        bundle[Kintsugi.Bundles.Bundle.HeaderLength + 20] ^= 0x01; // inside the signed manifest
        var response = await server.Admin.PostAsync("/api/v1/releases", Octets(bundle));
        Assert.True(response.StatusCode is HttpStatusCode.BadRequest or HttpStatusCode.UnprocessableEntity,
            $"{response.StatusCode}");
    }

    private static SignedReleaseMetadata Metadata(PublisherKey key, long version, int current, int[] revoked) =>
        SignedReleaseMetadata.Create(new ReleaseMetadataDescription(Kernels.Debian61, version, current, 0, revoked,
        DateTimeOffset.UtcNow.AddDays(7)), key);

    [Fact]
    public async Task
        Signed_release_metadata_revokes_its_levels_travels_to_agents_with_a_fresh_timestamp_and_only_moves_forward()
    {
        await using var server = await StartAsync();
        foreach (var level in new[] { 1, 2, 3 })
            await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, level));
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());

        var v1 = Metadata(server.Publisher, 1, 3, [3]);
        var stored = await server.PostJsonAsync("/api/v1/metadata", new { metadata = v1.Text });
        Assert.Equal(HttpStatusCode.Created, stored.StatusCode);
        Assert.Single((await stored.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("revokedReleases")
            .EnumerateArray());
        Assert.Equal(HttpStatusCode.OK,
            (await server.PostJsonAsync("/api/v1/metadata", new { metadata = v1.Text })).StatusCode);

        // The agent is offered level 2, with the publisher's statement and the server's timestamp for it.
        var answer = await agent.CheckInAsync();
        Assert.Equal(2, answer.Release!.Level);
        Assert.Equal(v1.Text, answer.Metadata);
        var timestampKey = (await server.GetJsonAsync("/api/v1/timestamp-key")).GetProperty("pem").GetString()!;
        using var trust = new TemporaryTrust(server.Publisher.PublicKey, PublisherPublicKey.FromPem(timestampKey));
        var timestamp = SignedReleaseTimestamp.Read(answer.Timestamp!);
        timestamp.Verify(trust.Store, SignedReleaseMetadata.Read(answer.Metadata!));
        Assert.True(timestamp.Timestamp.Expires > DateTimeOffset.UtcNow.AddHours(12));

        // An older version, one the server itself made up, or one from an unknown key is refused.
        Assert.Equal(HttpStatusCode.Conflict, (await server.PostJsonAsync("/api/v1/metadata",
            new { metadata = Metadata(server.Publisher, 1, 3, []).Text })).StatusCode);
        using var stranger = PublisherKey.Generate();
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await server.PostJsonAsync("/api/v1/metadata",
            new { metadata = Metadata(stranger, 2, 3, []).Text })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest,
            (await server.PostJsonAsync("/api/v1/metadata", new { metadata = "{\"signed\":\"e30=\"}" })).StatusCode);
        var auditor = server.Client(await server.TokenAsync(Role.Auditor, "aud"));
        Assert.Equal(HttpStatusCode.Forbidden, (await server.PostJsonAsync("/api/v1/metadata",
            new { metadata = Metadata(server.Publisher, 2, 3, [2, 3]).Text }, auditor)).StatusCode);
        Assert.Equal(1, (await server.GetJsonAsync($"/api/v1/metadata/{Kernels.Debian61.BuildId}", auditor))
            .GetProperty("version").GetInt64());
        Assert.True((await server.VerifyAuditAsync()).Intact);
    }

    [Fact]
    public async Task Publish_is_idempotent_and_cumulative_levels_only_go_up()
    {
        await using var server = await StartAsync();
        var level2 = Kernels.Bundle(server.Publisher, Kernels.Debian61, 2);
        var id = await server.PublishAsync(level2);
        var again = await server.Admin.PostAsync("/api/v1/releases", Octets(level2));
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal(id, (await again.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("release").GetProperty("id")
            .GetString());

        var lower = await server.Admin.PostAsync("/api/v1/releases",
            Octets(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1)));
        Assert.Equal(HttpStatusCode.Conflict, lower.StatusCode);
        var sameLevel = await server.Admin.PostAsync("/api/v1/releases",
            Octets(Kernels.Bundle(server.Publisher, Kernels.Debian61, 2)));
        Assert.Equal(HttpStatusCode.Conflict, sameLevel.StatusCode);
        // Levels are per kernel build: level 1 for another build is fine.
        await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian612, 1));
        var release = await server.GetJsonAsync($"/api/v1/releases/{id}");
        Assert.Equal("canary", release.GetProperty("channels")[0].GetProperty("channel").GetString());
    }

    private static byte[] Signed(PublisherKey key, KernelTarget target, int level, byte[] module) =>
        Kintsugi.Bundles.Bundle.Create(module, new BundleDescription
        {
            Target = target,
            CumulativeLevel = level,
            Fixes = [new BundleFix($"fix-{level}", [], $"fix at level {level}")],
            PatchedFunctions = [new PatchedFunction("vmlinux", $"function_{level}")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        }, key).ToArray();

    [Fact]
    public async Task
        Key_rotation_re_signed_levels_replace_their_bundles_and_a_retired_keys_releases_are_no_longer_offered()
    {
        await using var server = await StartAsync();
        using var successor = PublisherKey.Generate();
        var module1 = System.Security.Cryptography.RandomNumberGenerator.GetBytes(4096);
        var module2 = System.Security.Cryptography.RandomNumberGenerator.GetBytes(4096);
        await server.PublishAsync(Signed(server.Publisher, Kernels.Debian61, 1, module1));
        var level2 = await server.PublishAsync(Signed(server.Publisher, Kernels.Debian61, 2, module2));
        await server.PublishAsync(Signed(server.Publisher, Kernels.Debian612, 1, module1));
        var token = await server.EnrollmentTokenAsync();
        var web = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        var db = new SimulatedAgent(server, Kernels.Debian612, "db-1");
        await web.EnrollAsync(token);
        await db.EnrollAsync(token);
        Assert.Equal(CheckInAction.Apply, await web.SyncAsync(server.Publisher.PublicKey));
        var oldBundle = web.Bundle;

        // Rotation: trust the new key, re-sign the current level with it, publish. The same key re-signing is still a
        // clash.
        Assert.Equal(HttpStatusCode.Created,
            (await server.PostJsonAsync("/api/v1/keys", new { pem = successor.PublicKey.ExportPem() })).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await server.Admin.PostAsync("/api/v1/releases",
            Octets(Signed(server.Publisher, Kernels.Debian61, 2, module2)))).StatusCode);
        var resigned = Signed(successor, Kernels.Debian61, 2, module2);
        var published = await server.Admin.PostAsync("/api/v1/releases", Octets(resigned));
        Assert.Equal(HttpStatusCode.Created, published.StatusCode);
        var release = (await published.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("release");
        Assert.Equal(level2, release.GetProperty("id").GetString());
        Assert.Equal(Sha256Digest.Of(resigned).ToString(), release.GetProperty("bundle").GetString());
        Assert.Equal(successor.Id.ToString(), release.GetProperty("publisherKey").GetString());

        // The machine on the old bundle is offered the re-signed one, in the same channel, at the same level.
        var offer = await web.CheckInAsync();
        Assert.Equal(CheckInAction.Apply, offer.Action);
        Assert.Equal(2, offer.Release!.Level);
        Assert.NotEqual(oldBundle, offer.Release.Bundle);
        Assert.Equal(CheckInAction.Apply, await web.SyncAsync(successor.PublicKey));

        // Retiring the old key moves the epoch, and its releases that were not re-signed are offered no more.
        Assert.Equal(CheckInAction.Apply, (await db.CheckInAsync()).Action);
        var before = db.Epoch;
        Assert.Equal(HttpStatusCode.NoContent,
            (await server.Admin.PostAsync($"/api/v1/keys/{server.Publisher.Id}/retire", null)).StatusCode);
        Assert.True(await db.WaitForEventAsync() > before);
        Assert.Equal(CheckInAction.None, (await db.CheckInAsync()).Action);
        Assert.Equal(CheckInAction.None, (await web.CheckInAsync()).Action);
        // A retired key's bundle is not publishable either, and the trail says what happened.
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await server.Admin.PostAsync("/api/v1/releases",
            Octets(Signed(server.Publisher, Kernels.Debian61, 3, module2)))).StatusCode);
        var audit = await server.GetJsonAsync("/api/v1/audit?limit=200");
        Assert.Contains(audit.EnumerateArray(), e => e.GetProperty("action").GetString() == "release.resign");
        Assert.True((await server.VerifyAuditAsync()).Intact);
    }

    [Fact]
    public async Task A_signed_trust_root_update_is_carried_to_every_agent_and_retires_its_keys_here_too()
    {
        await using var server = await StartAsync();
        using var root = PublisherKey.Generate();
        using var successor = PublisherKey.Generate();
        await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        Assert.Null((await agent.CheckInAsync()).TrustRoot);
        var update = SignedTrustRoot.Create(2, [successor.PublicKey], [server.Publisher.PublicKey], [], root);

        var operatorClient = server.Client(await server.TokenAsync(Role.Operator, "oscar"));
        Assert.Equal(HttpStatusCode.Forbidden, (await server.PostJsonAsync("/api/v1/trust-root",
            new { document = update.Text }, operatorClient)).StatusCode);
        var published = await server.PostJsonAsync("/api/v1/trust-root", new { document = update.Text });
        Assert.Equal(HttpStatusCode.Created, published.StatusCode);
        var changes = (await published.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("changes").EnumerateArray()
            .Select(c => c.GetString()).ToList();
        Assert.Contains($"retired key {server.Publisher.Id}", changes);
        Assert.Contains($"trusted key {successor.Id}", changes);

        var answer = await agent.CheckInAsync();
        Assert.Equal(update.Text, answer.TrustRoot);
        Assert.Equal(CheckInAction.None, answer.Action); // the retired key's level is offered no more
        Assert.Equal(HttpStatusCode.OK,
        (await server.PostJsonAsync("/api/v1/trust-root", new { document = update.Text })).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await server.PostJsonAsync("/api/v1/trust-root",
            new { document = SignedTrustRoot.Create(1, [], [], [], root).Text })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest,
            (await server.PostJsonAsync("/api/v1/trust-root", new { document = "{\"signed\":\"e30=\"}" })).StatusCode);
        Assert.Equal(2, (await server.GetJsonAsync("/api/v1/trust-root",
            server.Client(await server.TokenAsync(Role.Auditor, "aud")))).GetProperty("version").GetInt64());
        var keys = (await server.GetJsonAsync("/api/v1/keys")).EnumerateArray()
            .ToDictionary(k => k.GetProperty("id").GetString()!, k => k.GetProperty("state").GetString());
        Assert.Equal("retired", keys[server.Publisher.Id.ToString()]);
        Assert.Equal("trusted", keys[successor.Id.ToString()]);
        Assert.True((await server.VerifyAuditAsync()).Intact);
    }

    [Fact]
    public async Task Each_machine_receives_the_release_for_its_exact_kernel_build()
    {
        await using var server = await StartAsync();
        var r61 = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        var r612 = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian612, 1));
        var token = await server.EnrollmentTokenAsync("canary");
        var a = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        var b = new SimulatedAgent(server, Kernels.Debian612, "web-2");
        var sameReleaseOtherBuild = new SimulatedAgent(server,
            Kernels.Debian61 with { BuildId = BuildId.Parse("00112233445566778899aabbccddeeff00112233") }, "web-3");
        foreach (var agent in new[] { a, b, sameReleaseOtherBuild }) await agent.EnrollAsync(token);

        var offerA = await a.CheckInAsync();
        var offerB = await b.CheckInAsync();
        Assert.Equal(CheckInAction.Apply, offerA.Action);
        Assert.Equal((await server.GetJsonAsync($"/api/v1/releases/{r61}")).GetProperty("bundle").GetString(),
            offerA.Release!.Bundle.ToString());
        Assert.Equal((await server.GetJsonAsync($"/api/v1/releases/{r612}")).GetProperty("bundle").GetString(),
            offerB.Release!.Bundle.ToString());
        Assert.Equal(CheckInAction.None, (await sameReleaseOtherBuild.CheckInAsync()).Action);

        // verifies digest, signature and build-id
        Assert.Equal(CheckInAction.Apply, await a.SyncAsync(server.Publisher.PublicKey));
        Assert.Equal(CheckInAction.None, (await a.CheckInAsync()).Action);
        var machine = await server.GetJsonAsync($"/api/v1/machines/{a.Machine}");
        Assert.Equal("applied", machine.GetProperty("state").GetString());
        Assert.Equal(1, machine.GetProperty("level").GetInt32());
        Assert.Equal(Kernels.Debian61.BuildId.ToString(), machine.GetProperty("buildId").GetString());
        Assert.True(machine.TryGetProperty("lastCheckIn", out var last) && last.ValueKind == JsonValueKind.String);
    }

    [Fact]
    public async Task A_bundle_is_served_immutable_by_its_digest_only_to_credentials()
    {
        await using var server = await StartAsync();
        var bytes = Kernels.Bundle(server.Publisher, Kernels.Debian61, 1);
        await server.PublishAsync(bytes);
        var digest = Sha256Digest.Of(bytes);
        var anonymous = await server.Client().GetAsync(ProtocolPaths.Bundle(digest));
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        var agent = new SimulatedAgent(server, Kernels.Debian61, "db-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        var response = await agent.Http.GetAsync(ProtocolPaths.Bundle(digest));
        Assert.Equal(bytes, await response.Content.ReadAsByteArrayAsync());
        Assert.Contains("immutable", response.Headers.CacheControl!.ToString());
        Assert.Equal($"\"{digest}\"", response.Headers.ETag!.Tag);
        Assert.Equal(HttpStatusCode.NotFound,
            (await agent.Http.GetAsync(ProtocolPaths.Bundle(Sha256Digest.Of([1, 2, 3])))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest,
            (await agent.Http.GetAsync(ProtocolPaths.BundlePrefix + "ABCDEF")).StatusCode);
    }

    [Fact]
    public async Task Revoke_wakes_long_polls_at_once_and_machines_return_to_the_previous_good_level()
    {
        await using var server = await StartAsync();
        await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        var level2 = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 2));
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        await agent.SyncAsync(server.Publisher.PublicKey);
        Assert.Equal(2, agent.Level);

        var poll = agent.WaitForEventAsync();
        await Task.Delay(300);
        Assert.False(poll.IsCompleted, "the long-poll answered before anything happened");
        var clock = Stopwatch.StartNew();
        var revoke = await server.PostJsonAsync($"/api/v1/releases/{level2}/revoke", new { reason = "oops in canary" });
        Assert.Equal(HttpStatusCode.OK, revoke.StatusCode);
        Assert.True(await poll > 0, "the epoch did not move");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"the long-poll took {clock.Elapsed} to wake");

        var answer = await agent.CheckInAsync();
        Assert.Equal(CheckInAction.Apply, answer.Action);
        Assert.Equal(1, answer.Release!.Level); // rollback to the previous good level
        await agent.SyncAsync(server.Publisher.PublicKey);
        Assert.Equal(1, agent.Level);
    }

    [Fact]
    public async Task Revoking_the_only_level_tells_machines_to_remove_it()
    {
        await using var server = await StartAsync();
        var only = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        await agent.SyncAsync(server.Publisher.PublicKey);
        (await server.PostJsonAsync($"/api/v1/releases/{only}/revoke", new { reason = "bad" }))
            .EnsureSuccessStatusCode();
        Assert.Equal(CheckInAction.Remove, await agent.SyncAsync(server.Publisher.PublicKey));
        Assert.Equal(CheckInAction.None, (await agent.CheckInAsync()).Action);
        var promote = await server.PostJsonAsync($"/api/v1/releases/{only}/promote", new { });
        Assert.Equal(HttpStatusCode.Conflict, promote.StatusCode);
    }

    [Fact]
    public async Task A_release_reaches_production_only_when_promoted_and_the_long_poll_says_so()
    {
        await using var server = await StartAsync();
        var release = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        var production = new SimulatedAgent(server, Kernels.Debian61, "prod-1");
        await production.EnrollAsync(await server.EnrollmentTokenAsync("production"));
        Assert.Equal(CheckInAction.None, (await production.CheckInAsync()).Action);
        var poll = production.WaitForEventAsync();
        var promoted = await server.PostJsonAsync($"/api/v1/releases/{release}/promote",
            new { channel = "production", reason = "looks good" });
        Assert.Equal(HttpStatusCode.OK, promoted.StatusCode);
        Assert.True(await poll > 0);
        Assert.Equal(CheckInAction.Apply, (await production.CheckInAsync()).Action);
    }

    [Fact]
    public async Task Automatic_promotion_waits_for_the_delay_and_enough_healthy_machines_and_stops_on_a_failure()
    {
        await using var server = await StartAsync();
        (await server.Admin.PutAsJsonAsync("/api/v1/channels/production",
            new { promoteAfterSeconds = 0, minApplied = 2 })).EnsureSuccessStatusCode();
        var good = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        var promoter = server.Server.Services.GetService(typeof(Fleet.Releases)) as Fleet.Releases;
        var canary = await server.EnrollmentTokenAsync("canary");
        var first = new SimulatedAgent(server, Kernels.Debian61, "c-1");
        var second = new SimulatedAgent(server, Kernels.Debian61, "c-2");
        await first.EnrollAsync(canary); await second.EnrollAsync(canary);

        await first.SyncAsync(server.Publisher.PublicKey);
        Assert.Empty(await promoter!.PromoteDueAsync(DateTimeOffset.UtcNow)); // one applied, two needed
        await second.SyncAsync(server.Publisher.PublicKey);
        Assert.Equal([(good, "production")], await promoter.PromoteDueAsync(DateTimeOffset.UtcNow));

        // A failure anywhere holds the next release back, however many applied it.
        var bad = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 2));
        await first.SyncAsync(server.Publisher.PublicKey);
        var offer = await second.CheckInAsync();
        Assert.Equal(2, offer.Release!.Level);
        second.State = PatchState.ApplyFailed; // it stays at level 1 and says why
        await second.CheckInAsync();
        var third = new SimulatedAgent(server, Kernels.Debian61, "c-3");
        await third.EnrollAsync(canary);
        await third.SyncAsync(server.Publisher.PublicKey);
        Assert.Empty(await promoter.PromoteDueAsync(DateTimeOffset.UtcNow));
        var health = (await server.GetJsonAsync($"/api/v1/releases/{bad}")).GetProperty("health");
        Assert.Equal(2, health.GetProperty("applied").GetInt32());
        Assert.Equal(1, health.GetProperty("failed").GetInt32());

        // A delay holds a release back until it has passed.
        (await server.Admin.PutAsJsonAsync("/api/v1/channels/production",
            new { promoteAfterSeconds = 3600, minApplied = 0 })).EnsureSuccessStatusCode();
        var other = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian612, 1));
        Assert.Empty(await promoter.PromoteDueAsync(DateTimeOffset.UtcNow));
        Assert.Equal([(other, "production")], await promoter.PromoteDueAsync(DateTimeOffset.UtcNow.AddHours(1.01)));
    }

    [Fact]
    public async Task A_single_use_enrollment_token_used_by_many_machines_at_once_enrolls_exactly_one()
    {
        await using var server = await StartAsync();
        for (var round = 0; round < 5; round++)
        {
            var once = await server.EnrollmentTokenAsync("production", maxUses: 1);
            var machines = Enumerable.Range(0, 8)
                .Select(i => new SimulatedAgent(server, Kernels.Debian61, $"race-{round}-{i}")).ToList();
            using var go = new SemaphoreSlim(0);
            var attempts =
                machines.Select(async m => { await go.WaitAsync(); return await m.TryEnrollAsync(once); }).ToList();
            go.Release(machines.Count);
            var answers = (await Task.WhenAll(attempts)).Select(r => r.StatusCode).ToList();
            Assert.True(answers.Count(s => s == HttpStatusCode.Created) == 1,
                $"round {round}: {string.Join(", ", answers)}");
            Assert.Equal(machines.Count - 1, answers.Count(s => s == HttpStatusCode.Unauthorized));
            var token = (await server.GetJsonAsync("/api/v1/enrollment-tokens")).EnumerateArray().Last();
            Assert.Equal(1, token.GetProperty("uses").GetInt32());
        }
        Assert.Equal(5, (await server.GetJsonAsync("/api/v1/machines")).GetArrayLength());
    }

    [Fact]
    public async Task Enrollment_tokens_bind_a_channel_and_refuse_when_expired_used_up_or_revoked()
    {
        await using var server = await StartAsync();
        var once = await server.EnrollmentTokenAsync("production", maxUses: 1);
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(once);
        Assert.Equal("production",
            (await server.GetJsonAsync($"/api/v1/machines/{agent.Machine}")).GetProperty("channel").GetString());
        Assert.Equal(HttpStatusCode.Unauthorized,
            (await new SimulatedAgent(server, Kernels.Debian61, "web-2").TryEnrollAsync(once)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await new SimulatedAgent(server, Kernels.Debian61, "web-3")
            .TryEnrollAsync("ket_" + new string('A', 43))).StatusCode);

        var tokens = await server.GetJsonAsync("/api/v1/enrollment-tokens");
        var id = tokens.EnumerateArray().First().GetProperty("id").GetString();
        var revokable = await server.EnrollmentTokenAsync("canary");
        var revokableId = (await server.GetJsonAsync("/api/v1/enrollment-tokens")).EnumerateArray().Last()
            .GetProperty("id").GetString();
        Assert.Equal(HttpStatusCode.NoContent,
            (await server.Admin.DeleteAsync($"/api/v1/enrollment-tokens/{revokableId}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized,
            (await new SimulatedAgent(server, Kernels.Debian61, "web-4").TryEnrollAsync(revokable)).StatusCode);
        Assert.NotEqual(id, revokableId);
    }

    [Fact]
    public async Task Re_enrolling_the_same_machine_keeps_its_identity_and_retires_the_old_credential()
    {
        await using var server = await StartAsync();
        var token = await server.EnrollmentTokenAsync();
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(token);
        var (machine, oldCredential) = (agent.Machine, agent.Credential!);
        await agent.EnrollAsync(token);
        Assert.Equal(machine, agent.Machine);
        Assert.NotEqual(oldCredential, agent.Credential);
        using var stale = server.Client(oldCredential);
        var request = new CheckInRequest(new KernelIdentity(Kernels.Debian61.Release, Kernels.Debian61.BuildId),
            PatchState.NothingToApply, null, null, null, 0, null, "0.1.0");
        Assert.Equal(HttpStatusCode.Unauthorized, (await stale.PostAsJsonAsync(ProtocolPaths.CheckIn, request,
            ProtocolJson.Default.CheckInRequest)).StatusCode);
        Assert.Single((await server.GetJsonAsync("/api/v1/machines")).EnumerateArray());
    }

    [Fact]
    public async Task Enrolling_an_enrolled_machine_id_again_needs_its_credential_or_an_operators_approval()
    {
        await using var server = await StartAsync();
        var token = await server.EnrollmentTokenAsync(maxUses: 3);
        var machine = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await machine.EnrollAsync(token);
        // Someone with a token and a copy of web-1's /etc/machine-id tries to take it over.
        var impostor = new SimulatedAgent(server, Kernels.Debian61, "evil") { MachineId = machine.MachineId };

        var refused = await impostor.TryEnrollAsync(token);

        Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        Assert.Contains("needs the machine's current credential or an operator's approval",
            (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("detail").GetString());
        Assert.Equal(HttpStatusCode.OK, (await machine.Http.PostAsJsonAsync(ProtocolPaths.CheckIn,
            new CheckInRequest(new KernelIdentity(Kernels.Debian61.Release, Kernels.Debian61.BuildId),
            PatchState.NothingToApply, null, null, null, 0, null, "0.1.0"),
            ProtocolJson.Default.CheckInRequest)).StatusCode);
        var view = await server.GetJsonAsync($"/api/v1/machines/{machine.Machine}");
        Assert.Equal("web-1", view.GetProperty("hostname").GetString());
        Assert.Equal(JsonValueKind.String, view.GetProperty("cloneSuspectedAt").ValueKind);
        Assert.Contains("evil", view.GetProperty("cloneDetail").GetString());
        var audit = (await server.GetJsonAsync("/api/v1/audit")).EnumerateArray()
            .Select(e => e.GetProperty("action").GetString()).ToList();
        Assert.Contains("machine.reenroll-refused", audit);
        var tokens = (await server.GetJsonAsync("/api/v1/enrollment-tokens")).EnumerateArray().Single();
        Assert.Equal(1, tokens.GetProperty("uses").GetInt32()); // a refused attempt uses nothing up

        // The machine itself (its credential as proof) may; a re-imaged machine may after an operator's approval.
        await machine.EnrollAsync(token);
        var reimaged = new SimulatedAgent(server, Kernels.Debian61, "web-1") { MachineId = machine.MachineId };
        var operatorClient = server.Client(await server.TokenAsync(Role.Operator, "oscar"));
        Assert.Equal(HttpStatusCode.OK,
            (await operatorClient.PostAsync($"/api/v1/machines/{machine.Machine}/approve-reenroll", null)).StatusCode);
        await reimaged.EnrollAsync(token);
        Assert.Equal(machine.Machine, reimaged.Machine);
        Assert.Equal(HttpStatusCode.Conflict,
            (await new SimulatedAgent(server, Kernels.Debian61, "again") { MachineId = machine.MachineId }
            .TryEnrollAsync(await server.EnrollmentTokenAsync())).StatusCode); // the approval was used up
        Assert.True((await server.VerifyAuditAsync()).Intact);
    }

    [Fact]
    public async Task
        A_cloned_machine_is_detected_from_boot_ids_that_alternate_and_reported_once_while_reboots_are_not()
    {
        await using var server = await StartAsync();
        var original = new SimulatedAgent(server, Kernels.Debian61, "web-1") { BootId = Guid.NewGuid().ToString() };
        await original.EnrollAsync(await server.EnrollmentTokenAsync());
        // Reboots: each check-in from a new boot id, never an earlier one.
        foreach (var _ in Enumerable.Range(0, 3))
        {
            original.BootId = Guid.NewGuid()
            .ToString(); await original.CheckInAsync();
        }
        Assert.Equal(JsonValueKind.Null, (await server.GetJsonAsync($"/api/v1/machines/{original.Machine}"))
            .GetProperty("cloneSuspectedAt").ValueKind);

        // A disk cloned with its credential: the same identity, another host, another boot id.
        var clone = new SimulatedAgent(server, Kernels.Debian61, "web-1") { BootId = Guid.NewGuid().ToString() };
        clone.UseCredential(original.Credential!);
        foreach (var _ in Enumerable.Range(0, 3)) { await clone.CheckInAsync(); await original.CheckInAsync(); }

        var view = await server.GetJsonAsync($"/api/v1/machines/{original.Machine}");
        Assert.Equal(JsonValueKind.String, view.GetProperty("cloneSuspectedAt").ValueKind);
        Assert.Contains("two hosts share this machine's identity", view.GetProperty("cloneDetail").GetString());
        var audit = (await server.GetJsonAsync("/api/v1/audit")).EnumerateArray()
            .Select(e => e.GetProperty("action").GetString()).ToList();
        Assert.Single(audit, a => a == "machine.clone-suspected");
    }

    [Fact]
    public async Task The_server_stores_and_shows_each_machines_release_metadata_freshness()
    {
        await using var server = await StartAsync();
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        agent.MetadataReport = new MetadataReport("stale", 3, DateTimeOffset.UtcNow.AddDays(-1));
        await agent.CheckInAsync();
        Assert.Equal("stale", (await server.GetJsonAsync($"/api/v1/machines/{agent.Machine}"))
            .GetProperty("metadataFreshness").GetString());
        agent.MetadataReport = new MetadataReport("fresh", 4, DateTimeOffset.UtcNow.AddDays(6));
        await agent.CheckInAsync();
        Assert.Equal("fresh", (await server.GetJsonAsync($"/api/v1/machines/{agent.Machine}"))
            .GetProperty("metadataFreshness").GetString());
    }

    [Fact]
    public async Task Roles_limit_what_a_token_may_do()
    {
        await using var server = await StartAsync();
        using var auditor = server.Client(await server.TokenAsync(Role.Auditor, "audrey"));
        using var operatorClient = server.Client(await server.TokenAsync(Role.Operator, "oscar"));
        using var nobody = server.Client();
        var bundle = Kernels.Bundle(server.Publisher, Kernels.Debian61, 1);

        Assert.Equal(HttpStatusCode.Unauthorized, (await nobody.GetAsync("/api/v1/machines")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await auditor.GetAsync("/api/v1/machines")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden,
            (await auditor.PostAsync("/api/v1/releases", Octets(bundle))).StatusCode);
        Assert.Equal(HttpStatusCode.Created,
            (await operatorClient.PostAsync("/api/v1/releases", Octets(bundle))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await operatorClient.PostAsJsonAsync("/api/v1/api-tokens",
            new { role = "admin", name = "escalate" })).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden,
            (await operatorClient.PutAsJsonAsync("/api/v1/channels/staging", new { manual = true })).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await auditor.GetAsync("/api/v1/enrollment-tokens")).StatusCode);

        var audit = await server.GetJsonAsync("/api/v1/audit");
        Assert.Contains(audit.EnumerateArray(), e => e.GetProperty("action").GetString() == "release.publish"
            && e.GetProperty("actor").GetString() == "token:oscar (operator)");
    }

    [Fact]
    public async Task Malformed_agent_requests_are_refused_with_a_problem_document()
    {
        await using var server = await StartAsync();
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        async Task<HttpResponseMessage> Post(string json) =>
            await agent.Http.PostAsync(ProtocolPaths.CheckIn,
            new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
        const string Kernel = "\"kernel\":{\"release\":\"6.1.0-56-cloud-amd64\",\"buildId\":" +
            "\"3b43fad5a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6\"}";
        string[] bad =
        [
            "not json",
            "{" + Kernel + "}", // state missing
            "{" + Kernel + ",\"state\":\"happy\",\"level\":null,\"bundle\":null,\"effectiveVersion\":null,\"taint\":" +
            "0,\"detail\":null,\"agentVersion\":\"0.1.0\"}",
            "{\"kernel\":{\"release\":\"6.1.0-56-cloud-amd64\",\"buildId\":\"xyz\"},\"state\":\"applied\",\"level\":" +
            "null,\"bundle\":null,\"effectiveVersion\":null,\"taint\":0,\"detail\":null,\"agentVersion\":\"0.1.0\"}",
            "{" + Kernel + ",\"state\":\"applied\",\"level\":3,\"bundle\":null,\"effectiveVersion\":null,\"taint\":0," +
            "\"detail\":null,\"agentVersion\":\"0.1.0\"}",
            "{" + Kernel + ",\"state\":\"applied\",\"level\":null,\"bundle\":null,\"effectiveVersion\":null," +
            "\"taint\":0,\"detail\":\"" + new string('x', 2000) + "\",\"agentVersion\":\"0.1.0\"}",
            "{" + Kernel + ",\"state\":\"applied\",\"level\":null,\"bundle\":null,\"effectiveVersion\":null," +
            "\"taint\":0,\"detail\":null,\"agentVersion\":\"0.1.0; rm -rf\"}",
        ];
        foreach (var json in bad)
        {
            var response = await Post(json);
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest,
                $"{json[..Math.Min(60, json.Length)]}: {(int)response.StatusCode}");
            var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
            Assert.Equal(400, problem.GetProperty("status").GetInt32());
            Assert.False(string.IsNullOrEmpty(problem.GetProperty("detail").GetString()));
        }
        Assert.Equal(HttpStatusCode.BadRequest,
            (await agent.Http.GetAsync(ProtocolPaths.Events + "?epoch=-1")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest,
            (await server.Admin.GetAsync("/api/v1/machines?state=happy")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest,
            (await server.Admin.GetAsync("/api/v1/releases/r_'or'1'='1")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest,
            (await server.PostJsonAsync("/api/v1/enrollment-tokens", new { channel = "Prod Uction" })).StatusCode);
        var unknown = await new SimulatedAgent(server, Kernels.Debian61, "bad host!")
            .TryEnrollAsync(await server.EnrollmentTokenAsync());
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);
    }

    [Fact]
    public async Task The_audit_log_records_every_step_and_verifies()
    {
        await using var server = await StartAsync();
        var release = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        await agent.SyncAsync(server.Publisher.PublicKey);
        (await server.PostJsonAsync($"/api/v1/releases/{release}/promote", new { })).EnsureSuccessStatusCode();
        (await server.PostJsonAsync($"/api/v1/releases/{release}/revoke", new { reason = "test" }))
            .EnsureSuccessStatusCode();
        await agent.SyncAsync(server.Publisher.PublicKey);

        var actions = (await server.GetJsonAsync("/api/v1/audit")).EnumerateArray()
            .Select(e => e.GetProperty("action").GetString()).ToList();
        foreach (var expected in new[] { "key.trust", "release.publish", "release.promote", "enrollment-token.create",
            "machine.enroll", "machine.state", "release.revoke" })
            Assert.Contains(expected, actions);
        var states = (await server.GetJsonAsync("/api/v1/audit")).EnumerateArray()
            .Where(e => e.GetProperty("action").GetString() == "machine.state")
            .Select(e => JsonDocument.Parse(e.GetProperty("detail").GetString()!).RootElement.GetProperty("to")
            .GetString()).ToList();
        Assert.Equal(["nothing-to-apply", "applying", "applied", "revoked"], states);
        var verification = await server.VerifyAuditAsync();
        Assert.True(verification.Intact, string.Join("; ", verification.Problems));
        Assert.Equal(actions.Count, verification.Events);
    }
}

/// <summary>A trust store in a temporary directory, with a publisher key and a timestamp key.</summary>
internal sealed class TemporaryTrust : IDisposable
{
    private readonly TemporaryDirectory _directory = new();

    public TrustStore Store { get; }

    public TemporaryTrust(PublisherPublicKey publisher, PublisherPublicKey timestamp)
    {
        Store = TrustStore.Open(_directory.Path);
        Store.Add(publisher);
        Store.AddTimestampKey(timestamp);
    }

    public void Dispose() => _directory.Dispose();
}

public sealed class SqliteFleet() : FleetSpecification(Backend.Sqlite);

[Collection("postgres")]
public sealed class PostgresFleet() : FleetSpecification(Backend.Postgres);
