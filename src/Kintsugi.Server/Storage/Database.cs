using System.Data;
using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Kintsugi.Server.Storage;

public enum Dialect { Sqlite, Postgres }

/// <summary>A failure of the server's storage: a message an operator can act on.</summary>
public sealed class StorageException(string message, Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.Environment;
}

/// <summary>
/// The server's database: embedded SQLite in the data directory by default, or PostgreSQL by connection
/// string, with the same schema and migrations. Writes go through <see cref="WriteAsync"/>: on SQLite one
/// process owns the file, so writes are serialized in-process (no SQLITE_BUSY upgrades); on PostgreSQL
/// several replicas write side by side and rows locks serialize what must be serialized (the audit chain).
/// </summary>
public sealed class Database : IDisposable
{
    private readonly string _connectionString;
    private readonly SemaphoreSlim _sqliteWriter = new(1, 1);
    private readonly NpgsqlDataSource? _postgres;

    public Dialect Dialect { get; }

    /// <summary>Where committed audit heads are also kept, outside the database (null: nowhere else).</summary>
    public AuditWitness? Witness { get; set; }

    /// <summary>Where the database lives, for messages (never the password).</summary>
    public string Description { get; }

    private Database(Dialect dialect, string connectionString, string description)
    {
        Dialect = dialect;
        _connectionString = connectionString;
        Description = description;
        if (dialect == Dialect.Postgres) _postgres = NpgsqlDataSource.Create(connectionString);
    }

    public static Database OpenSqlite(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var builder = new SqliteConnectionStringBuilder { DataSource = path, Pooling = true, DefaultTimeout = 30 };
        var database = new Database(Dialect.Sqlite, builder.ToString(), $"SQLite {path}");
        using var connection = database.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode=WAL;";
        command.ExecuteNonQuery();
        return database;
    }

    public static Database OpenPostgres(string connectionString)
    {
        NpgsqlConnectionStringBuilder builder;
        try { builder = new NpgsqlConnectionStringBuilder(connectionString); }
        catch (ArgumentException e)
        {
            throw new StorageException($"the PostgreSQL connection string is not valid: {e.Message}", e);
        }
        return new Database(Dialect.Postgres, connectionString,
            $"PostgreSQL {builder.Host}:{builder.Port}/{builder.Database}");
    }

    public DbConnection Open()
    {
        try
        {
            if (Dialect == Dialect.Postgres) return _postgres!.OpenConnection();
            var connection = new SqliteConnection(_connectionString);
            connection.Open();
            using var pragma = connection.CreateCommand();
            // WAL with synchronous=NORMAL: a crash of the process loses nothing; a power loss may lose the
            // last few commits, never corrupts.
            pragma.CommandText = "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;";
            pragma.ExecuteNonQuery();
            return connection;
        }
        catch (Exception e) when (e is DbException or InvalidOperationException or System.Net.Sockets.SocketException)
        {
            throw new StorageException($"cannot open {Description}: {e.Message}", e);
        }
    }

    public async Task<DbConnection> OpenAsync(CancellationToken cancellation = default)
    {
        if (Dialect == Dialect.Sqlite) return Open();
        try { return await _postgres!.OpenConnectionAsync(cancellation); }
        catch (Exception e) when (e is DbException or System.Net.Sockets.SocketException)
        {
            throw new StorageException($"cannot open {Description}: {e.Message}", e);
        }
    }

    /// <summary>Runs <paramref name="work"/> in one write transaction, committed when it returns.</summary>
    public async Task<T> WriteAsync<T>(Func<DbConnection, DbTransaction, Task<T>> work,
        CancellationToken cancellation = default)
    {
        var serialized = Dialect == Dialect.Sqlite;
        if (serialized) await _sqliteWriter.WaitAsync(cancellation);
        try
        {
            await using var connection = await OpenAsync(cancellation);
            await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted,
                cancellation);
            var result = await work(connection, transaction);
            await transaction.CommitAsync(cancellation);
            if (AuditChain.Appended(transaction) is { } head) Witness?.Advance(head);
            return result;
        }
        finally
        {
            if (serialized) _sqliteWriter.Release();
        }
    }

    public Task WriteAsync(Func<DbConnection, DbTransaction, Task> work, CancellationToken cancellation = default) =>
        WriteAsync<bool>(async (c, t) => { await work(c, t); return true; }, cancellation);

    /// <summary>A binary column type: BLOB in SQLite, BYTEA in PostgreSQL.</summary>
    public string BlobType => Dialect == Dialect.Postgres ? "BYTEA" : "BLOB";

    public void Dispose()
    {
        _postgres?.Dispose();
        if (Dialect == Dialect.Sqlite) SqliteConnection.ClearAllPools();
        _sqliteWriter.Dispose();
    }
}

internal static class DbExtensions
{
    public static DbCommand Command(this DbConnection connection, DbTransaction? transaction, string sql,
        params (string Name, object? Value)[] parameters)
    {
        var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach (var (name, value) in parameters) command.Parameters.Add(connection.Parameter(command, name, value));
        return command;
    }

    public static DbParameter Parameter(this DbConnection connection, DbCommand command, string name, object? value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value ?? DBNull.Value;
        return parameter;
    }

    public static async Task<int> ExecuteAsync(this DbConnection connection, DbTransaction? transaction, string sql,
        params (string, object?)[] parameters)
    {
        await using var command = connection.Command(transaction, sql, parameters);
        return await command.ExecuteNonQueryAsync();
    }

    public static async Task<object?> ScalarAsync(this DbConnection connection, DbTransaction? transaction, string sql,
        params (string, object?)[] parameters)
    {
        await using var command = connection.Command(transaction, sql, parameters);
        var value = await command.ExecuteScalarAsync();
        return value is DBNull ? null : value;
    }
}
