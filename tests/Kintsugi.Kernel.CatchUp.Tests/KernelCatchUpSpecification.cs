using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.CatchUp.Tests;

/// <summary>
/// A whole catch-up, as <c>kintsugi kernel catch-up</c> runs it, on a real Debian security update small enough for the
/// suite: linux-source-6.1 6.1.192-2 (the source of the 6.1.0-56 cloud kernel the suite boots) to 6.1.192-3, whose
/// only change is one nfsd fix with its CVE. The livepatch it builds is proven in the lab.
/// </summary>
public sealed class KernelCatchUpSpecification
{
    private const string Cve = "CVE-2026-99362";

    [Fact]
    public async Task A_security_update_of_the_running_line_becomes_one_livepatch_that_covers_its_CVE_and_loads()
    {
        var cache = DebianKernelArchive.DefaultCacheRoot;
        var archive = new DebianKernelArchive(cache);
        var lab = new LabMachine(archive, cache, Repository.KintsugiBinary, _ => { });
        using var output = new TemporaryDirectory();
        var request = new CatchUpRequest(TestKernels.Debian12Cloud61, "6.1.192-3", output.Path);

        var result = await new KernelCatchUp(archive, cache, () => lab, _ => { }).RunAsync(request);

        Assert.Equal(ExitCode.Success, result.ExitCode);
        var report = result.Report;
        Assert.Equal(("linux-source-6.1 6.1.192-2", "linux-source-6.1 6.1.192-3"), (report.From, report.To));
        var file = Assert.Single(report.Files);
        Assert.Equal(("fs/nfsd/nfs4state.c", FileOutcome.Built, "nfsd"), (file.Path, file.Outcome, file.Object));
        Assert.Contains("nfsd:nfsd4_sequence", file.Functions);
        var cve = Assert.Single(report.Cves);
        Assert.Equal((Cve, CveStatus.Covered), (cve.Id, cve.Status));
        Assert.Contains(Cve, File.ReadAllText(result.TextReportPath), StringComparison.Ordinal);
        var verdict = await new PatchVerification(lab).RunAsync(TestKernels.Debian12Cloud61, report.Module!, null,
            TimeSpan.FromMinutes(8));
        Assert.True(verdict.Verdict == "pass", string.Join("\n", [.. verdict.LogProblems, .. verdict.TaintProblems]));
    }
}
