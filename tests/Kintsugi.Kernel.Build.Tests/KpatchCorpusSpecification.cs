using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// kpatch's own integration patches (written for linux 6.2; shared/corpus beside the checkout, see
/// <see cref="Repository.KpatchCorpus"/>) built for the 6.1 cloud kernel under that suite's conventions:
/// <c>NAME-FAIL.patch</c> must be refused, every other patch must build, and a patch with a
/// <c>NAME-LOADED.test</c> must pass it while loaded and fail it before and after (kernel test's verification;
/// the bash scripts run under the guest's busybox sh, without sudo). A patch whose code this configuration does
/// not build fails as not applicable rather than passing. Slow (one build, and one boot per LOADED test):
/// run with <c>KINTSUGI_KPATCH_CORPUS=1</c>.
/// </summary>
[Collection("6.1 cloud kernel")]
public sealed class KpatchCorpusOn61
{
    private static readonly KernelRelease Release = TestKernels.Debian12Cloud61;

    public static TheoryData<string> Patches()
    {
        try
        {
            return [.. Directory.GetFiles(Repository.KpatchCorpus, "*.patch").Select(Path.GetFileName)
            .OfType<string>().Order(StringComparer.Ordinal)];
        }
        catch (InvalidOperationException) { return []; }
    }

    [KpatchCorpusTheory]
    [MemberData(nameof(Patches))]
    public async Task A_kpatch_integration_patch_builds_or_is_refused_as_its_name_says(string patch)
    {
        var name = Path.GetFileNameWithoutExtension(patch);
        var path = Path.Combine(Repository.KpatchCorpus, patch);
        using var directory = new TemporaryDirectory();
        var request = new KernelBuildRequest(new TargetReference.Debian(Release), [path], name.Replace("-FAIL", ""), [],
            null, Path.Combine(directory.Path, "out"));

        if (name.EndsWith("-FAIL", StringComparison.Ordinal))
        {
            var refused = await Assert.ThrowsAnyAsync<KintsugiException>(() =>
                FixCorpusRun.Builder().BuildAsync(request));
            Assert.True(refused is LivepatchRefusedException || refused.ExitCode == ExitCode.InputRefused,
                $"{patch} failed, but not as a refusal: {refused.GetType().Name}: {refused.Message}");
            return;
        }
        var result = await FixCorpusRun.Builder().BuildAsync(request);
        Assert.True(result.Outcome == BuildOutcome.Built, $"not applicable to {Release}: {result.Message}");

        var test = Path.Combine(Repository.KpatchCorpus, name + "-LOADED.test");
        if (!File.Exists(test)) return;
        // The suite's scripts are bash with sudo; the guest is root with busybox sh.
        var check = Path.Combine(directory.Path, "check.sh");
        await File.WriteAllTextAsync(check, (await File.ReadAllTextAsync(test)).Replace("sudo ", "",
            StringComparison.Ordinal).Replace("#!/bin/bash", "#!/bin/sh", StringComparison.Ordinal));
        var lab = await KernelUnderTest.GetAsync(Release);
        var verdict = await new PatchVerification(lab.Lab).RunAsync(Release, result.Module!, check,
            TimeSpan.FromMinutes(5));
        Assert.True(verdict.Verdict == "pass", string.Join('\n', verdict.Steps.Select(s => $"{s.Name}: {s.ExitCode}")
            .Concat(verdict.LogProblems).Concat(verdict.TaintProblems)));
    }
}

/// <summary>A theory run only with <c>KINTSUGI_KPATCH_CORPUS=1</c>.</summary>
public sealed class KpatchCorpusTheoryAttribute : TheoryAttribute
{
    public const string Variable = "KINTSUGI_KPATCH_CORPUS";

    public KpatchCorpusTheoryAttribute()
    {
        if (Environment.GetEnvironmentVariable(Variable) != "1")
            Skip = $"builds kpatch's integration patches and boots their LOADED tests: run with {Variable}=1";
    }
}
