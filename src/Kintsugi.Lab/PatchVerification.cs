using System.Text.RegularExpressions;
using Kintsugi.Kernel;

namespace Kintsugi.Lab;

/// <summary>One step of a patch test: what was expected of it and what happened.</summary>
public sealed record PatchTestStep(string Name, string Expected, int ExitCode, bool Passed);

/// <summary>The verdict of <c>kintsugi kernel test</c>.</summary>
public sealed record PatchTestResult(
    string Kernel,
    string Module,
    bool HasCheck,
    IReadOnlyList<PatchTestStep> Steps,
    IReadOnlyList<string> TaintProblems,
    IReadOnlyList<string> LogProblems,
    string Verdict,
    double Seconds);

/// <summary>
/// Proves a livepatch module on its exact target kernel, booted in the lab: the check fails before the
/// load, passes while the patch is applied, and fails again after the unload; the load and unload succeed;
/// and the kernel reports no oops, BUG, warning or new problem taint.
/// </summary>
public sealed class PatchVerification(LabMachine lab)
{
    /// <param name="extraFiles">Files the check needs in the guest (a helper program, a module it loads).</param>
    public async Task<PatchTestResult>
        RunAsync(KernelRelease kernel, string modulePath, string? checkScript, TimeSpan timeout,
        IReadOnlyList<GuestFile>? extraFiles = null, CancellationToken cancellation = default)
    {
        var module = ModuleFile.Read(modulePath);
        if (!module.IsLivepatch)
            throw new LabException($"{modulePath} is not a livepatch module (no livepatch=Y)", ExitCode.InputRefused);
        List<GuestFile> files = [new(modulePath, "/kintsugi-test/patch.ko"), .. extraFiles ?? []];
        if (checkScript is not null)
        {
            if (!File.Exists(checkScript))
                throw new LabException($"--check: {checkScript} does not exist", ExitCode.Usage);
            files.Add(new GuestFile(checkScript, "/kintsugi-test/check"));
        }
        var check = checkScript is null ? "" : "sh /kintsugi-test/check > /dev/null 2>&1; echo \"@check-{0}=$?\"";
        var script = $"""
            echo "@taint-before=$(cat /proc/sys/kernel/tainted)"
            {string.Format(check, "before")}
            kintsugi kernel load /kintsugi-test/patch.ko; echo "@load=$?"
            {string.Format(check, "loaded")}
            kintsugi kernel unload {module.Name}; echo "@unload=$?"
            {string.Format(check, "after")}
            echo "@taint-after=$(cat /proc/sys/kernel/tainted)"
            echo "@kernel-log"; dmesg
            """;
        var run = await lab.RunAsync(new LabRunSpec(kernel, script, files, timeout), cancellation: cancellation);
        if (run.TimedOut) throw new LabException($"the test of {module.Name} on {kernel} timed out after " +
            $"{timeout.TotalSeconds:0} s", ExitCode.LabTimeout);

        var steps = new List<PatchTestStep>();
        void Step(string name, string label, bool expectSuccess)
        {
            var code = Marker(run.Output, label);
            steps.Add(new PatchTestStep(name, expectSuccess ? "succeeds" : "fails", (int)(code ?? -1),
                code is { } c && (c == 0) == expectSuccess));
        }
        if (checkScript is not null) Step("check before load", "check-before", expectSuccess: false);
        Step("load", "load", expectSuccess: true);
        if (checkScript is not null) Step("check while loaded", "check-loaded", expectSuccess: true);
        Step("unload", "unload", expectSuccess: true);
        if (checkScript is not null) Step("check after unload", "check-after", expectSuccess: false);

        var taintBefore = new Taint((ulong)(Marker(run.Output, "taint-before") ?? 0));
        var taintAfter = new Taint((ulong)(Marker(run.Output, "taint-after") ?? 0));
        var taintProblems = taintAfter.ProblemsAddedSince(taintBefore);
        // The whole kernel log, from dmesg: the console shows only the most severe messages.
        var logStart = run.Output.IndexOf("@kernel-log\n", StringComparison.Ordinal);
        var kernelLog = logStart < 0 ? run.Console : run.Output[logStart..];
        var logProblems = kernelLog.Split('\n').Where(KernelLog.IsProblem).Select(l => l.Trim()).ToList();
        var crashed = run.ExitCode is null;
        if (crashed) logProblems.Add("the guest stopped before the test finished (kernel panic, crash or reboot)");
        var passed = !crashed && steps.All(s => s.Passed) && taintProblems.Count == 0 && logProblems.Count == 0;
        return new PatchTestResult(kernel.Value, module.Name.Value, checkScript is not null, steps, taintProblems,
            logProblems,
            passed ? "pass" : "fail", run.Duration.TotalSeconds);
    }

    private static long? Marker(string output, string label)
    {
        var match = Regex.Match(output, $"^@{Regex.Escape(label)}=(\\d+)$", RegexOptions.Multiline);
        return match.Success ? long.Parse(match.Groups[1].Value) : null;
    }
}
