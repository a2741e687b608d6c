using System.Diagnostics;
using Kintsugi.User.Build;
using Xunit.Abstractions;

namespace Kintsugi.User.Tests;

/// <summary>
/// The proof in a real service: Debian's own PostgreSQL 15 binary, running a pgbench load, gets a real upstream fix
/// of a later 15.x release built by <c>kintsugi user build</c> from nothing but the binary and the fix: upstream's
/// commit d782c97e1 of REL_15_STABLE (15.19), verbatim in tests/fixtures/user/postgresql-15/. The builder fetches
/// Debian's source package at the binary's version, configures it as Debian's build does (its dh sequence, the
/// headers the build generates) and compiles the touched unit with the package's own compile command; the fixed
/// code is proven equal to Debian's own build of the fix (its 15.20 security update). The patch goes into the
/// postmaster and every backend; backends forked afterwards carry it; no connection drops and no query fails;
/// reverted the same way. Downloads the packages and the source once into the cache (about 70 MB), installs the
/// source package's build dependencies when missing and configures the tree once (minutes): run with
/// <c>KINTSUGI_POSTGRESQL=1</c>.
/// </summary>
public sealed class PostgreSqlSpecification(ITestOutputHelper log)
{
    /// <summary>"Fix missing money overflow checks for INT64_MIN / -1", as <c>git format-patch</c> wrote it.</summary>
    private const string Fix = "d782c97e1-money-division-by-minus-one.patch";
    /// <summary>Debian's security update that carries the fix (its binary downloads; its source does not).</summary>
    private const string DebianFixedVersion = "15.20-0+deb12u1";
    private const string EdgeCase = "SELECT '-92233720368547758.08'::money / -1";
    /// <summary>The commit's own regression queries: the smallest money value divided by -1 of each integer type
    /// (<c>cash_div_int8</c>, <c>cash_div_int4</c>, <c>cash_div_int2</c>).</summary>
    private static readonly string[] EdgeCases =
    [
        "SELECT '-92233720368547758.08'::money / -1::int8",
        "SELECT '-92233720368547758.08'::money / -1::int4",
        "SELECT '-92233720368547758.08'::money / -1::int2",
    ];
    /// <summary>15.18 divides; x86's idiv traps and the backend reports the SIGFPE as an error.</summary>
    private const string Shipped = "floating-point exception";
    private const string Fixed = "money out of range";

    [PostgreSqlFact]
    public async Task An_upstream_fix_reaches_the_postmaster_and_every_backend_under_pgbench_load_and_is_reverted()
    {
        var package = PostgreSqlPackage.Prepare();
        var patch = await Build(package);
        using var cluster = new PostgreSqlCluster(package);
        Assert.All(EdgeCases, sql => Assert.Contains(Shipped, cluster.Query(sql)));
        Assert.Equal(0, Client(cluster, "pgbench", "-i", "-q", "-s", "2").ExitCode);

        using var session = new PsqlSession(cluster);
        Assert.Contains(Shipped, session.Run(EdgeCase));
        using var directory = new TemporaryDirectory();
        var script = directory["divide.sql"];
        // Every pgbench client divides money all the time: the patched functions are called while they are replaced.
        File.WriteAllText(script,
            "SELECT '12.34'::money / -1, '12.34'::money / (-1)::int4, '12.34'::money / (-1)::int2;\n");
        using var load = Process.Start(cluster.Client("pgbench", "-n", "-c", "8", "-j", "2", "-T", "24", "-P", "4",
            "-b", "tpcb-like@1", "-f", $"{script}@1"))!;
        var loadOutput = load.StandardOutput.ReadToEndAsync();
        var loadErrors = load.StandardError.ReadToEndAsync();
        Thread.Sleep(TimeSpan.FromSeconds(4));

        var patcher = new UserPatcher(PatcherOptions.Default with { BusyTimeout = TimeSpan.FromSeconds(10) });
        var processes = cluster.Processes();
        Assert.True(processes.Count >= 8 + 5,
            $"expected the postmaster, its auxiliary processes and 8 pgbench backends: {processes.Count}");
        var applied = processes.Select(pid => patcher.Apply(pid, patch)).ToList();
        Report("apply", applied);
        Assert.All(applied, r =>
            Assert.True(r.Outcome == ProcessOutcome.Applied, $"{r.Pid} ({r.Command}): {r.Outcome} {r.Message}"));
        Assert.All(processes, pid => Assert.Contains(UserPatcher.List(pid), p => p.Name == patch.Name));

        Assert.Contains(Fixed, session.Run(EdgeCase));         // a backend that existed before the patch
        Assert.All(EdgeCases, sql => Assert.Contains(Fixed, cluster.Query(sql))); // backends forked after it
        using (var later = new PsqlSession(cluster))
            Assert.Contains(UserPatcher.List(later.BackendPid), p => p.Name == patch.Name);
        Assert.Equal("-$12.34", session.Run("SELECT '12.34'::money / -1"));
        Thread.Sleep(TimeSpan.FromSeconds(4));

        var reverted = cluster.Processes().Select(pid => patcher.Revert(pid)).ToList();
        Report("revert", reverted);
        Assert.All(reverted, r =>
            Assert.True(r.Outcome == ProcessOutcome.Reverted, $"{r.Pid} ({r.Command}): {r.Outcome} {r.Message}"));
        Assert.Contains(Shipped, session.Run(EdgeCase));
        Assert.All(EdgeCases, sql => Assert.Contains(Shipped, cluster.Query(sql)));

        load.WaitForExit();
        var summary = loadOutput.Result + loadErrors.Result;
        log.WriteLine(summary);
        Assert.True(load.ExitCode == 0, $"pgbench exited {load.ExitCode} (a client aborted):\n{summary}");
        Assert.Contains("number of failed transactions: 0 ", summary);
        Assert.DoesNotContain("aborted", summary);
        Assert.DoesNotContain("server closed the connection", summary);
        Assert.DoesNotContain("terminated by signal", cluster.ServerLog);
    }

    /// <summary>What <c>kintsugi user build POSTGRES --package postgresql-15=VERSION --fix FIX --fixed-object
    /// FIXED</c> does: the source package, configured as Debian built it (cached), the unit compiled with its own
    /// build command, and each replaced function's compiled fix proven equal to Debian's build of it.</summary>
    private async Task<UserPatch> Build(PostgreSqlPackage package)
    {
        using var directory = new TemporaryDirectory();
        var output = directory["pg15-money-divide.kup.json"];
        var clock = Stopwatch.StartNew();
        var messages = new List<string>();
        void Progress(string message)
        {
            log.WriteLine(message);
            messages.Add(message);
        }
        var debian = new DebianSource(DebianSource.DefaultCacheRoot, log.WriteLine);
        var prepared = await debian.PrepareAsync(SourcePackage.Parse($"postgresql-15={PostgreSqlPackage.Version}"));
        var configured = await new SourceConfigurator(log.WriteLine)
            .ConfigureAsync(prepared, installBuildDependencies: true);
        var debianFixed = Path.Combine(await debian.UnpackBinaryAsync(
            SourcePackage.Parse($"postgresql-15={DebianFixedVersion}")), "usr/lib/postgresql/15/bin/postgres");
        log.WriteLine($"source configured in {clock.Elapsed.TotalSeconds:0.0} s " +
            $"({configured.Commands.Count} compile commands)");
        clock.Restart();
        var request = new UserBuildRequest(package.Postgres, configured.Tree,
            Path.Combine(AppContext.BaseDirectory, "Fixtures", "postgresql-15", Fix), prepared.CompilerFlags,
            "pg15-money-divide", output, Configured: configured, FixedObjectPath: debianFixed);
        var result = await new UserPatchBuilder(Progress).BuildAsync(request);
        Assert.Contains("build/src/backend/utils/adt", configured.CommandsFor("src/backend/utils/adt/cash.c")
            .Select(c => c.Directory));
        log.WriteLine($"built in {clock.Elapsed.TotalSeconds:0.0} s: {string.Join(", ", result.Functions)} " +
            $"({string.Join(", ", result.PhaseSeconds.Select(p => $"{p.Key} {p.Value:0.00} s"))})");
        // the commit also changes the regression tests: they are not compiled into postgres
        Assert.Equal(["src/backend/utils/adt/cash.c"], result.Units);
        Assert.Equal(["cash_div_int2", "cash_div_int4", "cash_div_int8"], result.Functions.Order());
        Assert.Contains(messages, m => m.Contains("the fixed code of") && m.Contains(debianFixed));
        // the same comparison against a build without the fix (the shipped binary itself) refuses
        var unfixed = await Assert.ThrowsAsync<UserBuildException>(() => new UserPatchBuilder().BuildAsync(
            request with { FixedObjectPath = package.Postgres, OutputPath = output + ".unfixed" }));
        Assert.Equal("fixed-build", unfixed.Rule);
        return UserPatch.Load(output);
    }

    private void Report(string what, IReadOnlyList<ProcessResult> results)
    {
        foreach (var r in results)
            log.WriteLine($"{what} {r.Pid} ({r.Command}): {r.Outcome}, paused {r.PauseMilliseconds:0.00} ms, " +
                $"{r.Attempts} attempt(s) {r.Message}");
        var pauses = results.Select(r => r.PauseMilliseconds).Order().ToList();
        log.WriteLine($"{what}: {results.Count} processes, pause median {pauses[pauses.Count / 2]:0.00} ms, worst " +
            $"{pauses[^1]:0.00} ms");
    }

    private static Process Client(PostgreSqlCluster cluster, string program, params string[] arguments)
    {
        var process = Process.Start(cluster.Client(program, arguments))!;
        process.StandardOutput.ReadToEnd();
        process.StandardError.ReadToEnd();
        process.WaitForExit();
        return process;
    }
}

/// <summary>A fact run only with <c>KINTSUGI_POSTGRESQL=1</c>.</summary>
public sealed class PostgreSqlFactAttribute : FactAttribute
{
    public const string Variable = "KINTSUGI_POSTGRESQL";

    public PostgreSqlFactAttribute()
    {
        if (Environment.GetEnvironmentVariable(Variable) != "1")
            Skip = $"downloads Debian's postgresql-15 and its source once (about 70 MB) and runs pgbench: run with " +
                $"{Variable}=1";
    }
}
