// The pause a patched process sees: `kintsugi user apply` stops every thread, checks stacks, maps and writes
// the patch, redirects the function, and lets the threads go. Median and worst of N applications (and of the
// reverts between them) for processes with 1 and with 64 worker threads.
// Usage: dotnet run -c Release --project bench/user [-- RUNS [THREADS...]]; THREADS is a count (busy threads) or
// a count with "s" (a server's pool: each thread handles a call, then waits 5 ms), e.g. 100 1 64 64s.
using System.Diagnostics;
using Kintsugi.User;
using Kintsugi.User.Build;

var runs = args.Length > 0 ? int.Parse(args[0]) : 100;
var threadCounts = args.Length > 1 ? args.Skip(1).ToArray() : ["1", "64", "64s"];
var work = Directory.CreateTempSubdirectory("kintsugi-user-bench-").FullName;
try
{
    var source = Path.Combine(AppContext.BaseDirectory, "target.c");
    Gcc("-O2", "-pthread", source, "-o", Path.Combine(work, "target"));
    Gcc("-O2", "-pthread", "-DFIXED", "-ffunction-sections", "-fdata-sections", "-c", source, "-o",
        Path.Combine(work, "fixed.o"));
    var patch =
        PatchLinker.Link(Path.Combine(work, "target"), Path.Combine(work, "fixed.o"), ["compute"], "bench-compute");
    Console.WriteLine($"load average at start: {File.ReadAllText("/proc/loadavg").Trim()}");
    Console.WriteLine(
        "| threads | runs | apply median ms | apply worst ms | revert median ms | revert worst ms | retries |");
    Console.WriteLine("|---|---|---|---|---|---|---|");
    foreach (var spec in threadCounts)
    {
        var server = spec.EndsWith('s');
        var threads = int.Parse(spec.TrimEnd('s'));
        var pid = Start(Path.Combine(work, "target"), threads, server);
        try
        {
            var patcher = new UserPatcher();
            var apply = new List<double>();
            var revert = new List<double>();
            var retries = 0;
            // One cycle first, not counted: it JIT-compiles the applier (the published kintsugi is ReadyToRun).
            patcher.Apply(pid, patch);
            patcher.Revert(pid);
            for (var i = 0; i < runs; i++)
            {
                var a = patcher.Apply(pid, patch);
                if (a.Outcome != ProcessOutcome.Applied) throw new Exception($"apply {i}: {a.Outcome} {a.Message}");
                var r = patcher.Revert(pid);
                if (r.Outcome != ProcessOutcome.Reverted) throw new Exception($"revert {i}: {r.Outcome} {r.Message}");
                if (a.Threads != threads + 1) throw new Exception($"saw {a.Threads} threads, expected {threads + 1}");
                apply.Add(a.PauseMilliseconds);
                revert.Add(r.PauseMilliseconds);
                retries += a.Attempts - 1 + r.Attempts - 1;
            }
            if (!File.Exists($"/proc/{pid}/stat")) throw new Exception("the target died");
            apply.Sort();
            revert.Sort();
            Console.WriteLine($"| {threads}{(server ? " (server pool)" : "")} | {runs} | {Median(apply):0.00} | " +
                $"{apply[^1]:0.00} | {Median(revert):0.00} | {revert[^1]:0.00} | {retries} |");
        }
        finally { Process.GetProcessById(pid).Kill(); }
    }
    Console.WriteLine($"load average at end: {File.ReadAllText("/proc/loadavg").Trim()}");
}
finally { Directory.Delete(work, recursive: true); }

static double Median(List<double> sorted) =>
    sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;

static void Gcc(params string[] arguments)
{
    using var gcc = Process.Start("gcc", arguments);
    gcc.WaitForExit();
    if (gcc.ExitCode != 0) throw new Exception($"gcc {string.Join(' ', arguments)} failed");
}

// Started through a shell that exits at once, so this process never reaps the target's ptrace stops.
static int Start(string program, int threads, bool server)
{
    var log = Path.GetTempFileName();
    using var shell = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", $"exec {program} {threads} " +
        $"{(server ? "server" : "busy")} >{log} 2>&1 & echo $!"])
    { RedirectStandardOutput = true })!;
    var pid = int.Parse(shell.StandardOutput.ReadToEnd().Trim());
    shell.WaitForExit();
    while (!File.ReadAllText(log).Contains("ready")) Thread.Sleep(10);
    File.Delete(log);
    return pid;
}
