using System.Text.Json;
using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;
using Kintsugi.Testing;
using static Kintsugi.Testing.GuestOutput;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// Scanners see the effective version: a module the builder made, loaded with the opt-in, makes plain
/// <c>uname -v</c> and <c>/proc/version</c> show the effective version while it is applied and the real one after
/// its removal; without the opt-in they never change. On the 6.1 cloud kernel with the README's demonstration fix.
/// </summary>
[Collection("6.1 cloud kernel")]
public sealed class EffectiveUnameSpecification
{
    private static readonly KernelRelease Release = TestKernels.Debian12Cloud61;

    [Fact]
    public async Task Uname_and_proc_version_show_the_effective_version_only_while_an_opted_in_patch_is_applied()
    {
        using var directory = new TemporaryDirectory();
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        var builder = new KernelPatchBuilder(archive, () => new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { }), _ => { });
        var result = await builder.BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release),
            [Path.Combine(Repository.Root, "samples", "fixes", "proc-cmdline.patch")], "uname", [], null, Path.Combine(directory.Path, "out")));
        Assert.Equal(BuildOutcome.Built, result.Outcome);
        var kernel = await KernelUnderTest.GetAsync(Release);

        var run = await kernel.RunAsync("""
            echo @real; uname -v
            kintsugi kernel load /inputs/uname.ko > /dev/null 2>&1 || exit 10
            echo @plain-uname; uname -v
            kintsugi kernel unload --all > /dev/null 2>&1 || exit 11
            kintsugi kernel load --effective-uname /inputs/uname.ko > /dev/null 2>&1 || exit 12
            echo @uname; uname -v
            echo @proc-version; cat /proc/version
            echo @kintsugi-uname; kintsugi uname -v
            echo @status; kintsugi status --json
            kintsugi kernel unload --all > /dev/null 2>&1 || exit 13
            echo @after-uname; uname -v
            echo @after-proc-version; cat /proc/version
            mkdir -p /etc/kintsugi && touch /etc/kintsugi/effective-uname
            kintsugi kernel load /inputs/uname.ko > /dev/null 2>&1 || exit 14
            echo @switched-uname; uname -v
            echo @end
            """, [new GuestFile(result.Module!, "/inputs/uname.ko")], timeoutSeconds: 900);
        Assert.True(run.ExitCode == 0, $"{run.Describe()}\n--- output\n{run.Output}\n--- console\n{run.Console}");
        var output = run.Output;

        var real = Section(output, "real");
        var packageVersion = kernel.Kernel.Target.PackageVersion!;
        Assert.Contains($"Debian {packageVersion} ", real);
        // Without the opt-in the kernel's strings never change.
        Assert.Equal(real, Section(output, "plain-uname"));

        // Opted in: the module's effective version, in both places scanners read, as kintsugi uname says.
        var effective = Section(output, "uname");
        Assert.Equal(real.Replace($"Debian {packageVersion} ", $"Debian {packageVersion}+kintsugi1 "), effective);
        Assert.EndsWith(effective, Section(output, "proc-version"));
        Assert.Equal(effective, Section(output, "kintsugi-uname"));
        using (var status = JsonDocument.Parse(Section(output, "status")))
        {
            // The kernel's own version is still known while uname shows another.
            Assert.Equal(real, status.RootElement.GetProperty("kernelVersion").GetString());
            Assert.Equal(effective, status.RootElement.GetProperty("effectiveVersion").GetString());
        }

        // Removed: the real version again.
        Assert.Equal(real, Section(output, "after-uname"));
        Assert.EndsWith(real, Section(output, "after-proc-version"));
        // The machine-wide switch file opts in every load.
        Assert.Equal(effective, Section(output, "switched-uname"));
    }
}
