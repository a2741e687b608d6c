using System.Data.Common;
using Kintsugi.Server.Storage;

namespace Kintsugi.Server.Tests;

/// <summary>Someone with database access edits the audit log by hand; verification must say so.</summary>
public abstract class AuditTamperSpecification(Backend backend)
{
    private async Task<TestServer> ServerWithHistoryAsync()
    {
        var server = await TestServer.StartAsync(backend);
        var release = await server.PublishAsync(Kernels.Bundle(server.Publisher, Kernels.Debian61, 1));
        var agent = new SimulatedAgent(server, Kernels.Debian61, "web-1");
        await agent.EnrollAsync(await server.EnrollmentTokenAsync());
        await agent.SyncAsync(server.Publisher.PublicKey);
        (await server.PostJsonAsync($"/api/v1/releases/{release}/revoke", new { reason = "test" }))
            .EnsureSuccessStatusCode();
        Assert.True((await server.VerifyAuditAsync()).Intact);
        return server;
    }

    /// <summary>What an attacker with the database does: lift the append-only triggers, then change rows.</summary>
    private static async Task TamperAsync(TestServer server, string sql)
    {
        var db = (Database)server.Server.Services.GetService(typeof(Database))!;
        await using var connection = await db.OpenAsync();
        var dropTriggers = db.Dialect == Dialect.Postgres
            ? "DROP TRIGGER audit_events_append_only ON audit_events"
            : "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete";
        await using (
            var drop = connection.CreateCommand())
        {
            drop.CommandText =
            dropTriggers; await drop.ExecuteNonQueryAsync();
        }
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        Assert.True(await command.ExecuteNonQueryAsync() > 0, "the tampering changed nothing");
    }

    [Fact]
    public async Task The_database_refuses_to_update_or_delete_audit_rows()
    {
        await using var server = await ServerWithHistoryAsync();
        var db = (Database)server.Server.Services.GetService(typeof(Database))!;
        await using var connection = await db.OpenAsync();
        foreach (var sql in new[] { "UPDATE audit_events SET actor = 'nobody' WHERE seq = 2",
            "DELETE FROM audit_events WHERE seq = 2" })
        {
            await using var command = connection.CreateCommand();
            command.CommandText = sql;
            await Assert.ThrowsAnyAsync<DbException>(() => command.ExecuteNonQueryAsync());
        }
    }

    [Fact]
    public async Task An_edited_row_is_detected()
    {
        await using var server = await ServerWithHistoryAsync();
        await TamperAsync(server,
            "UPDATE audit_events SET actor = 'token:someone-else (admin)' WHERE action = 'release.revoke'");
        var result = await server.VerifyAuditAsync();
        Assert.False(result.Intact);
        Assert.Contains(result.Problems, p => p.Problem.Contains("edited"));
    }

    [Fact]
    public async Task An_edited_row_with_a_recomputed_hash_breaks_the_next_link()
    {
        await using var server = await ServerWithHistoryAsync();
        var events = await AuditChain.ReadAsync((Database)server.Server.Services.GetService(typeof(Database))!);
        var target = events[2];
        var forged = AuditChain.Hash(target.Seq, target.At.ToUnixTimeMilliseconds(), "system:nobody", target.Address,
            target.Action, target.Subject, target.Detail, target.PrevHash);
        await TamperAsync(server,
            $"UPDATE audit_events SET actor = 'system:nobody', hash = '{forged}' WHERE seq = {target.Seq}");
        var result = await server.VerifyAuditAsync();
        Assert.False(result.Intact);
        Assert.Contains(result.Problems, p => p.Seq == target.Seq + 1 && p.Problem.Contains("link"));
    }

    [Fact]
    public async Task A_deleted_row_is_detected()
    {
        await using var server = await ServerWithHistoryAsync();
        await TamperAsync(server, "DELETE FROM audit_events WHERE seq = 3");
        var result = await server.VerifyAuditAsync();
        Assert.False(result.Intact);
        Assert.Contains(result.Problems, p => p.Problem.Contains("missing"));
    }

    [Fact]
    public async Task Deleting_the_newest_rows_is_detected()
    {
        await using var server = await ServerWithHistoryAsync();
        await TamperAsync(server, "DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)");
        var result = await server.VerifyAuditAsync();
        Assert.False(result.Intact);
        Assert.Contains(result.Problems, p => p.Problem.Contains("deleted from the end"));
    }

    [Fact]
    public async Task A_database_rolled_back_to_an_earlier_consistent_copy_is_detected_from_the_head_kept_outside_it()
    {
        await using var server = await ServerWithHistoryAsync();
        var backup = await server.VerifyAuditAsync();
        (await server.PostJsonAsync("/api/v1/enrollment-tokens", new { channel = "canary" })).EnsureSuccessStatusCode();
        Assert.True((await server.VerifyAuditAsync()).HeadSeq > backup.HeadSeq);

        // A restore of the older copy: the chain and its head as they were then, consistent with each other.
        await TamperAsync(server, $"DELETE FROM audit_events WHERE seq > {backup.HeadSeq}; " +
            $"UPDATE audit_head SET seq = {backup.HeadSeq}, hash = '{backup.HeadHash}' WHERE id = 1");
        var db = (Database)server.Server.Services.GetService(typeof(Database))!;
        var witness = db.Witness;
        db.Witness = null;
        Assert.True((await server.VerifyAuditAsync()).Intact, "the chain alone cannot tell a rollback");
        db.Witness = witness;

        var result = await server.VerifyAuditAsync();
        Assert.False(result.Intact);
        Assert.Contains(result.Problems, p => p.Problem.Contains("rolled back"));
        var location = server.Options.PostgresConnectionString is { } cs
            ? new[] { "--postgres", cs, "--data", server.Options.DataDirectory }
            : ["--data", server.Options.DataDirectory];
        var (code, output) = RunVerifier(location);
        Assert.True(code == 3, output);
        Assert.Contains("rolled back", output);
    }

    [Fact]
    public async Task The_offline_verifier_exits_3_on_a_broken_chain_and_0_on_an_intact_one()
    {
        await using var server = await ServerWithHistoryAsync();
        var location = server.Options.PostgresConnectionString is { } cs ? new[] { "--postgres", cs }
            : ["--data", server.Options.DataDirectory];
        var (intact, intactOutput) = RunVerifier(location);
        Assert.True(intact == 0, intactOutput);
        Assert.Contains("intact", intactOutput);
        await TamperAsync(server,
            "UPDATE audit_events SET subject = 'release:r_0000000000000000' WHERE action = 'release.revoke'");
        var (broken, brokenOutput) = RunVerifier(location);
        Assert.Equal(3, broken);
        Assert.Contains("BROKEN", brokenOutput);
    }

    private static (int ExitCode, string Output) RunVerifier(string[] location)
    {
        var result = ExternalCommand.Run("dotnet",
            [Path.Combine(AppContext.BaseDirectory, "kintsugi-server.dll"), "audit", "verify", .. location]);
        return (result.ExitCode, result.StandardOutput + result.StandardError);
    }
}

public sealed class SqliteAuditTamper() : AuditTamperSpecification(Backend.Sqlite);

[Collection("postgres")]
public sealed class PostgresAuditTamper() : AuditTamperSpecification(Backend.Postgres);
