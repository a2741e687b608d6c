using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// A real stable fix of each Debian release, taken from the next Debian version of its line, built for a kernel ABI
/// the rest of the suite does not use (its own build root on Debian 11 and 13, the host's compiler on Debian 12),
/// proven against the shipped code and applied in the lab, where its own behaviour changes only while it is loaded
/// (tests/fixtures/stable-fixes). Each kernel is fetched and prepared cold on first use, so these are opt-in with the
/// build-root lines.
/// </summary>
[Collection("stable fixes on unused ABIs"), BuildRootLine]
public sealed class StableFixSpecification
{
    public static TheoryData<string, string> Fixes => new()
    {
        { "5.10.0-43-cloud-amd64", "alarm-timer-forward" },
        { "6.1.0-54-cloud-amd64", "fcntl-rw-hint-immutable" },
        { "6.12.115+deb12-cloud-amd64", "copy-file-range-nothing" },
        { "6.12.116+deb13-cloud-amd64", "copy-file-range-nothing" },
        // A rebuilt upload (6.12.115-2) took the ABI name "+deb13.1"; its symbol-table boot outlasted the old 3-minute
        // bound.
        { "6.12.115+deb13.1-cloud-amd64", "copy-file-range-nothing" },
    };

    [LineTheory, MemberData(nameof(Fixes))]
    public async Task A_stable_fix_is_built_proven_against_the_shipped_code_and_changes_behaviour_only_while_loaded(
        string kernel, string fixName)
    {
        var release = KernelRelease.Parse(kernel);
        var fixture = Path.Combine(Repository.Root, "tests", "fixtures", "stable-fixes", fixName);
        using var directory = new TemporaryDirectory();
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        var lab = new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { });
        var builder = new KernelPatchBuilder(archive, () => lab, _ => { });

        var result = await builder.BuildAsync(new KernelBuildRequest(new TargetReference.Debian(release),
            [Path.Combine(fixture, "fix.patch")], fixName.Replace('-', '_'), [], null,
            Path.Combine(directory.Path, "out")));

        Assert.Equal(BuildOutcome.Built, result.Outcome);
        Assert.True(result.Manifest!.Fidelity.Checked);
        Assert.True(result.Manifest.Fidelity.FunctionsMatched > 0);
        Assert.Empty(result.Manifest.Fidelity.Mismatches);
        Assert.Equal(kernel, ModuleFile.Read(result.Module!).VermagicRelease);

        var source = Directory.GetFiles(fixture, "*.c").Single();
        var helper = Path.Combine(directory.Path, Path.GetFileNameWithoutExtension(source));
        var compiled = await ExternalCommand.RunAsync("gcc", ["-static", "-O2", "-o", helper, source]);
        Assert.True(compiled.Succeeded, compiled.StandardError);
        var verdict = await new PatchVerification(lab).RunAsync(release, result.Module!,
            Path.Combine(fixture, "check.sh"),
            TimeSpan.FromMinutes(8), [new GuestFile(helper, "/fixtures/" + Path.GetFileName(helper))]);
        Assert.True(verdict.Verdict == "pass", string.Join('\n', verdict.Steps.Select(s => $"{s.Name}: {s.ExitCode}")
            .Concat(verdict.LogProblems).Concat(verdict.TaintProblems)));
    }
}
