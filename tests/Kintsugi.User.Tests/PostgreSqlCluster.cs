using System.Diagnostics;

namespace Kintsugi.User.Tests;

/// <summary>
/// Debian's postgresql-15 at one exact version, as bench/user/postgresql/prepare.sh lays it out in the cache: the
/// binaries in a private root (the source is the builder's business: <c>user build --package</c>).
/// </summary>
public sealed record PostgreSqlPackage(string Root, string Postgres)
{
    public const string Version = "15.18-0+deb12u1";

    public string Bin => Path.GetDirectoryName(Postgres)!;

    public string Libraries => Path.Combine(Root, "usr", "lib", "x86_64-linux-gnu");

    public static string Script => Path.Combine(Repository.Root, "bench", "user", "postgresql", "prepare.sh");

    public static PostgreSqlPackage Prepare()
    {
        var result = ExternalCommand.Run(Script, Version);
        Assert.True(result.Succeeded, $"{Script} failed:\n{result.StandardError}");
        var values = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split('=', 2)).ToDictionary(p => p[0], p => p[1].Trim('\''));
        return new(values["ROOT"], values["POSTGRES"]);
    }
}

/// <summary>
/// A PostgreSQL cluster of the package's own binaries, run as <c>nobody</c> in a temporary directory and reached
/// through a Unix socket there. The postmaster is started by pg_ctl, so it is not a child of the test process
/// (which must never reap its ptrace stops); stopped immediately and deleted at the end.
/// </summary>
public sealed class PostgreSqlCluster : IDisposable
{
    private const string User = "nobody";
    private readonly PostgreSqlPackage _package;
    private readonly TemporaryDirectory _directory = new();

    public PostgreSqlCluster(PostgreSqlPackage package)
    {
        _package = package;
        Run("chown", User, _directory.Path);
        Run("chmod", "0755", _directory.Path);
        RunAs(Path.Combine(package.Bin, "initdb"), "-D", Data, "-U", "postgres", "--auth=trust", "--no-sync", "-E",
            "UTF8", "--locale=C.UTF-8");
        RunAs(Path.Combine(package.Bin, "pg_ctl"), "-D", Data, "-l", _directory.File("server.log"), "-w", "-t",
            "60",
            "-o", $"-k {_directory.Path} -c listen_addresses='' -p {Port} -c max_connections=50 -c fsync=off", "start");
        PostmasterPid = int.Parse(File.ReadLines(Path.Combine(Data, "postmaster.pid")).First());
    }

    public const int Port = 54329;

    public int PostmasterPid { get; }

    public string Data => _directory.File("data");

    public string SocketDirectory => _directory.Path;

    public string ServerLog => File.ReadAllText(_directory.File("server.log"));

    /// <summary>The postmaster and every process it forked (backends, checkpointer, walwriter, ...).</summary>
    public IReadOnlyList<int> Processes()
    {
        var found = new List<int> { PostmasterPid };
        foreach (var directory in System.IO.Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), out var pid)) continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(directory, "stat"));
                var parent = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                if (parent == PostmasterPid) found.Add(pid);
            }
            catch (IOException) { }
        }
        return found;
    }

    /// <summary>A client program of the package (psql, pgbench) with its own libpq, talking to this cluster.</summary>
    public ProcessStartInfo Client(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(Path.Combine(_package.Bin, program), [.. arguments])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        start.Environment["LD_LIBRARY_PATH"] = _package.Libraries;
        start.Environment["PGHOST"] = _directory.Path;
        start.Environment["PGPORT"] = Port.ToString();
        start.Environment["PGUSER"] = "postgres";
        start.Environment["PGDATABASE"] = "postgres";
        return start;
    }

    /// <summary>Runs one statement in a new connection (a backend forked now); returns its output and errors.</summary>
    public string Query(string sql)
    {
        using var psql = Process.Start(Client("psql", "-X", "-A", "-t", "-c", sql))!;
        var output = psql.StandardOutput.ReadToEndAsync();
        var errors = psql.StandardError.ReadToEnd();
        psql.WaitForExit();
        return (output.Result + errors).Trim();
    }

    private void RunAs(string program, params string[] arguments) =>
        Run("runuser", ["-u", User, "--", program, .. arguments]);

    private static void Run(string program, params string[] arguments)
    {
        var result = ExternalCommand.Run(program, arguments);
        Assert.True(result.Succeeded,
            $"{program} {string.Join(' ', arguments)}:\n{result.StandardOutput}{result.StandardError}");
    }

    public void Dispose()
    {
        ExternalCommand.Run("runuser", "-u", User, "--", Path.Combine(_package.Bin, "pg_ctl"), "-D", Data, "-m",
            "immediate", "-w", "stop");
        _directory.Dispose();
    }
}

/// <summary>
/// One psql session kept open: its backend was forked when the session started, so it shows what a process
/// that existed before a patch does afterwards.
/// </summary>
public sealed class PsqlSession : IDisposable
{
    private const string Marker = "__kintsugi_done__";
    private readonly Process _psql;

    public PsqlSession(PostgreSqlCluster cluster)
    {
        var start = cluster.Client("/bin/sh");
        start.FileName = "/bin/sh";
        // Errors and results on one stream, in order; the package's psql with its own libpq.
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add($"exec " +
            $"'{Path.Combine(Path.GetDirectoryName(cluster.Client("psql").FileName)!, "psql")}' -X -A -t -q 2>&1");
        _psql = Process.Start(start)!;
        BackendPid = int.Parse(Run("SELECT pg_backend_pid()"));
    }

    public int BackendPid { get; }

    public string Run(string sql)
    {
        // psql runs a statement at its semicolon
        _psql.StandardInput.WriteLine(sql.TrimEnd().EndsWith(';') ? sql : sql + ";");
        _psql.StandardInput.WriteLine($"\\echo {Marker}");
        _psql.StandardInput.Flush();
        var lines = new List<string>();
        while (true)
        {
            var line = _psql.StandardOutput.ReadLine()
                ?? throw new InvalidOperationException($"psql ended " +
                $"({string.Join('\n', lines)}{_psql.StandardError.ReadToEnd()})");
            if (line == Marker) break;
            lines.Add(line);
        }
        return string.Join('\n', lines).Trim();
    }

    public void Dispose()
    {
        try { _psql.StandardInput.WriteLine("\\q"); _psql.StandardInput.Close(); } catch (IOException) { }
        if (!_psql.WaitForExit(5000)) _psql.Kill();
        _psql.Dispose();
    }
}
