using System.Diagnostics;
using Kintsugi.Testing;

namespace Kintsugi.Server.Tests;

/// <summary>
/// A real PostgreSQL server (Debian's postgresql-15 package) for the test run: a throwaway cluster made with
/// initdb in a temporary directory, run as the postgres user, on a free local port; stopped at process
/// exit. Each test server gets its own database.
/// </summary>
public static class Postgres
{
    private static readonly Lazy<Cluster> Instance = new(Start);
    private static int _databases;

    public sealed record Cluster(string Directory, int Port, string Bin);

    public static string BinDirectory =>
        System.IO.Directory.Exists("/usr/lib/postgresql")
        ? System.IO.Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin"))
        .Where(d => File.Exists(Path.Combine(d, "initdb"))).OrderDescending().FirstOrDefault() ?? "" : "";

    /// <summary>Creates a fresh database and returns its connection string.</summary>
    public static string NewDatabase(string? name = null)
    {
        var cluster = Instance.Value;
        name ??= $"kintsugi_test_{Environment.ProcessId}_{Interlocked.Increment(ref _databases)}";
        Run("runuser", ["-u", "postgres", "--", Path.Combine(cluster.Bin, "createdb"), "-h", "127.0.0.1", "-p",
            cluster.Port.ToString(), "-U", "postgres", name]);
        return $"Host=127.0.0.1;Port={cluster.Port};Username=postgres;Database={name};Pooling=true;Maximum Pool " +
            $"Size=50";
    }

    private static Cluster Start()
    {
        var bin = BinDirectory;
        if (bin.Length == 0) throw new InvalidOperationException("PostgreSQL is not installed: run " +
            "scripts/install-prerequisites.sh (Debian package postgresql)");
        RemoveLeftovers(bin);
        var directory = Path.Combine(Path.GetTempPath(), $"{Prefix}{Environment.ProcessId}");
        if (System.IO.Directory.Exists(directory)) System.IO.Directory.Delete(directory, true);
        System.IO.Directory.CreateDirectory(directory);
        Run("chown", ["postgres:postgres", directory]);
        var data = Path.Combine(directory, "data");
        Run("runuser", ["-u", "postgres", "--", Path.Combine(bin, "initdb"), "-D", data, "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-sync"]);
        var port = Ports.Free();
        Run("runuser", ["-u", "postgres", "--", Path.Combine(bin, "pg_ctl"), "-D", data, "-l",
            Path.Combine(directory, "log"), "-w", "-t", "60",
            "-o", $"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 -c " +
            $"shared_buffers=128MB", "start"]);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Run("runuser",
                    ["-u", "postgres", "--", Path.Combine(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"]);
                System.IO.Directory.Delete(directory, true);
            }
            catch (InvalidOperationException) { }
        };
        return new Cluster(directory, port, bin);
    }

    private const string Prefix = "kintsugi-pg-";

    /// <summary>
    /// Clusters of test runs that ended without their exit handler (a killed or timed-out test host): each is a few
    /// hundred MB, so a developer's machine would fill up run after run.
    /// </summary>
    private static void RemoveLeftovers(string bin)
    {
        foreach (var directory in System.IO.Directory.GetDirectories(Path.GetTempPath(), Prefix + "*"))
        {
            if (!int.TryParse(Path.GetFileName(directory)[Prefix.Length..], out var owner)
                || System.IO.Directory.Exists($"/proc/{owner}")) continue;
            var data = Path.Combine(directory, "data");
            try
            {
                if (File.Exists(Path.Combine(data, "postmaster.pid")))
                    Run("runuser", ["-u", "postgres", "--", Path.Combine(bin, "pg_ctl"), "-D", data, "-m", "immediate",
                        "-w", "stop"]);
            }
            catch (InvalidOperationException)
            {
                // Its server is no longer running (the pid file outlived it).
            }
            System.IO.Directory.Delete(directory, recursive: true);
        }
    }

    private static void Run(string file, string[] arguments)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = "/"
        };
        foreach (var a in arguments) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', arguments)} failed " +
            $"({process.ExitCode}): {error}{output.Result}");
    }
}

[CollectionDefinition("postgres")]
public sealed class PostgresCollection;
