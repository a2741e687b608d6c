using System.Globalization;
using System.Text.RegularExpressions;

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
        return double.TryParse(line.AsSpan(open + 1, close - open - 1).Trim(), NumberStyles.Float,
            CultureInfo.InvariantCulture, out var t) ? t : null;
    }
}

/// <summary>
/// How Kintsugi reads the kernel log for trouble after a patch load: only reports the kernel itself makes about
/// itself. A user process cannot write the kernel log, but its name appears in lines the kernel prints about it
/// (<c>NAME[PID]: segfault at …</c>, <c>traps: NAME[PID] general protection fault …</c>), and a process may be
/// named <c>WARNING:</c> or <c>BUG: x</c>; such lines are never a kernel problem, so matching is by the kernel's own
/// formats at the start of the message, never by text anywhere in the line.
/// </summary>
public static partial class KernelLog
{
    // A process's comm is at most 15 bytes; the kernel reports a user fault as "comm[pid]: segfault at ..." or,
    // with the "traps: " prefix, "comm[pid] general protection fault ..." / "comm[pid] trap ...". Also lines the
    // kernel starts with a task's name: "comm (pid): drop_caches: 3", "comm (pid) used greatest stack depth".
    [GeneratedRegex(@"^(traps: )?.{1,16}?\[\d+\]:? (segfault at |general protection fault|trap |potentially " +
        @"unexpected)|^.{1,16}? \(\d+\):? ", RegexOptions.Singleline)]
    private static partial Regex UserTaskLine();

    // The kernel's own report headers (lib/bug.c, kernel/panic.c, arch/x86/mm/fault.c, arch/x86/kernel/traps.c,
    // arch/x86/kernel/dumpstack.c, kernel/watchdog.c, kernel/hung_task.c, kernel/livepatch).
    [GeneratedRegex(@"^(-+\[ cut here \]-+\s*$" +
                    @"|Oops: .*\[#\d+\]" +
                    @"|BUG: " +
                    @"|kernel BUG at \S+" +
                    @"|WARNING: CPU: \d+ PID: \d+ at " +
                    @"|general protection fault(, |: )" +
                    @"|watchdog: BUG: soft lockup" +
                    @"|INFO: task .+ blocked for more than \d+ seconds" +
                    @"|Kernel panic - not syncing" +
                    @"|livepatch: .*fail)", RegexOptions.Singleline)]
    private static partial Regex KernelReport();

    /// <summary>The message of a log line: without the <c>&lt;N&gt;</c> level, the <c>[seconds]</c> time and a
    /// <c>[T123]</c>/<c>[C1]</c> caller id.</summary>
    public static string Message(string line)
    {
        var text = line.TrimEnd('\r');
        if (text.StartsWith('<') && text.IndexOf('>') is > 0 and < 6 and var close) text = text[(close + 1)..];
        for (var i = 0; i < 2; i++)
        {
            var trimmed = text.TrimStart();
            if (!trimmed.StartsWith('[') || trimmed.IndexOf(']') is not (> 0 and var end)) break;
            var inside = trimmed.AsSpan(1, end - 1).Trim();
            var isTime = double.TryParse(inside, NumberStyles.Float, CultureInfo.InvariantCulture, out _);
            var isCaller = inside.Length > 1 && inside[0] is 'T' or 'C'
                && int.TryParse(inside[1..], NumberStyles.None, CultureInfo.InvariantCulture, out _);
            if (!isTime && !isCaller) break;
            text = trimmed[(end + 1)..];
            if (text.StartsWith(' ')) text = text[1..];
        }
        return text;
    }

    /// <summary>
    /// Whether a log line is the kernel reporting a problem in itself: a warning or BUG (<c>cut here</c>), an oops,
    /// a kernel general protection fault, a soft lockup, a hung task, a panic, or a failed livepatch operation.
    /// Lines about user processes (a segfault, a trap, a GPF in user space) are not, whatever the process is named.
    /// </summary>
    public static bool IsProblem(string line)
    {
        var message = Message(line);
        return !UserTaskLine().IsMatch(message) && KernelReport().IsMatch(message);
    }
}
