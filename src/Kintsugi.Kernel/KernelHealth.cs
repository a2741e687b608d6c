using System.Globalization;

namespace Kintsugi.Kernel;

/// <summary>What the kernel said went wrong since a point in time: problem taint flags and log lines.</summary>
public sealed record HealthReport(IReadOnlyList<string> TaintProblems, IReadOnlyList<string> LogProblems)
{
    public bool Healthy => TaintProblems.Count == 0 && LogProblems.Count == 0;

    public override string ToString() => Healthy ? "healthy" :
        string.Join("; ", TaintProblems.Select(t => "new taint " + t).Concat(LogProblems.Take(5)));
}

/// <summary>A moment to check the kernel's health against: its taint and log position then.</summary>
public sealed record HealthBaseline(Taint Taint, double UptimeSeconds)
{
    public static HealthBaseline Now() => new(RunningKernel.Taint, Uptime());

    /// <summary>
    /// A baseline at an earlier moment of this boot (a load whose process was interrupted): log lines since
    /// then count; taint cannot be dated, so every problem flag set now counts.
    /// </summary>
    public static HealthBaseline Since(DateTimeOffset? moment)
    {
        var uptime = Uptime();
        var ago = moment is { } m ? (DateTimeOffset.UtcNow - m).TotalSeconds : uptime;
        return new(new Taint(0), Math.Max(0, uptime - Math.Max(0, ago)));
    }

    public HealthReport Check()
    {
        var log = Native.ReadKernelLog();
        var problems = new List<string>();
        foreach (var line in log.Split('\n'))
        {
            var time = LineTime(line);
            if (time is null || time < UptimeSeconds) continue;
            if (KernelLog.IsProblem(line)) problems.Add(line.Trim());
        }
        return new HealthReport(RunningKernel.Taint.ProblemsAddedSince(Taint), problems);
    }

    private static double Uptime() =>
        double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture);

    /// <summary>The timestamp of a "&lt;4&gt;[   12.345678] text" log line.</summary>
    internal static double? LineTime(string line)
    {
        var open = line.IndexOf('[');
        var close = line.IndexOf(']');
        if (open < 0 || close < open) return null;
        return double.TryParse(line.AsSpan(open + 1, close - open - 1).Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var t) ? t : null;
    }
}

/// <summary>How Kintsugi reads the kernel log for trouble after a patch load.</summary>
public static class KernelLog
{
    private static readonly string[] ProblemMarkers =
        ["Oops", "BUG:", "WARNING:", "Call Trace", "general protection fault", "kernel BUG", "soft lockup", "hung_task", "livepatch: failed"];

    /// <summary>Whether a log line reports an oops, BUG, warning, lockup or a failed livepatch operation.</summary>
    public static bool IsProblem(string line) => ProblemMarkers.Any(m => line.Contains(m, StringComparison.Ordinal));
}
