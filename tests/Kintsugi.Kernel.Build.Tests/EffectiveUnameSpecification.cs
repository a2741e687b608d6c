using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;
using Kintsugi.Testing;
using static Kintsugi.Testing.GuestOutput;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// Scanners see the effective version: a module the builder made, loaded with the opt-in, makes plain
/// <c>uname -v</c> and <c>/proc/version</c> show the effective version while it is applied and the real one after
/// its removal; without the opt-in they never change. The agent, with <c>effective-uname = yes</c> in agent.conf,
/// applies a signed bundle of the module showing the effective version, and boot re-application of that installed patch
/// shows it again, the switch file absent. On the 6.1 cloud kernel with the README's demonstration fix, in one boot.
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
        var builder = new KernelPatchBuilder(archive, () => new LabMachine(archive,
            DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { }), _ => { });
        var result = await builder.BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release),
            [Path.Combine(Repository.Root, "samples", "fixes", "proc-cmdline.patch")], "uname", [], null,
            Path.Combine(directory.Path, "out")));
        Assert.Equal(BuildOutcome.Built, result.Outcome);
        var kernel = await KernelUnderTest.GetAsync(Release);
        var packageVersion = kernel.Kernel.Target.PackageVersion!;
        using var publisher = PublisherKey.Generate();
        File.WriteAllText(directory["publisher.pub"], publisher.PublicKey.ExportPem());
        File.WriteAllBytes(directory["uname.bundle"],
            Bundle.Create(File.ReadAllBytes(result.Module!), new BundleDescription
            {
                Target = kernel.Kernel.Target,
                CumulativeLevel = 1,
                Fixes = [new BundleFix("proc-cmdline", [], "the README's demonstration fix")],
                PatchedFunctions = [new Bundles.PatchedFunction("vmlinux", "cmdline_proc_show")],
                CreatedAt = DateTimeOffset.UtcNow,
                BuilderVersion = "0.1.0",
                EffectivePackageVersion = packageVersion + "+kintsugi1",
            }, publisher).ToArray());
        File.WriteAllText(directory["agent.conf"], """
            offline-directory = /var/lib/kintsugi/offline
            settle = 1
            effective-uname = yes
            """ + "\n");

        var run = await kernel.RunAsync($$"""
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
            rm /etc/kintsugi/effective-uname
            kintsugi kernel unload --all > /dev/null 2>&1 || exit 15
            mkdir -p /var/lib/kintsugi/offline && cp /inputs/uname.bundle /var/lib/kintsugi/offline/
            cp /inputs/agent.conf /etc/kintsugi/agent.conf
            kintsugi keys trust /inputs/publisher.pub > /dev/null || exit 16
            echo @agent; kintsugi agent run --once 2>&1 || exit 17
            echo @agent-uname; uname -v
            echo @agent-proc-version; cat /proc/version
            # As after a reboot: the patch out of the kernel but installed, this boot's re-application not done yet.
            kintsugi kernel unload {{result.Manifest!.Module}} > /dev/null 2>&1 || exit 18
            echo @unloaded-uname; uname -v
            rm -f /run/kintsugi/boot-applied
            echo @boot; kintsugi kernel boot --settle 1 2>&1 || exit 19
            echo @boot-uname; uname -v
            echo @end
            """, [new GuestFile(result.Module!, "/inputs/uname.ko"),
                new GuestFile(directory["uname.bundle"], "/inputs/uname.bundle"),
                new GuestFile(directory["publisher.pub"], "/inputs/publisher.pub"),
                    new GuestFile(directory["agent.conf"], "/inputs/agent.conf")],
            timeoutSeconds: 900);
        Succeeded(run);
        var output = run.Output;

        var real = Section(output, "real");
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

        // The agent's key, the switch file gone: the agent's apply shows the effective version, and so does the boot
        // re-application of the patch it installed (the choice kept with it).
        Assert.Equal(effective, Section(output, "agent-uname"));
        Assert.EndsWith(effective, Section(output, "agent-proc-version"));
        Assert.Equal(real, Section(output, "unloaded-uname"));
        Assert.Equal(effective, Section(output, "boot-uname"));
    }
}
