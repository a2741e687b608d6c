using System.CommandLine;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Kintsugi.Lab;

namespace Kintsugi.Cli;

/// <summary>
/// kintsugi demo: the whole job, end to end. Fetches a real Debian kernel and its exact source, builds a
/// livepatch from a source fix (samples/fixes/proc-cmdline.patch) with the real builder, boots the kernel
/// under QEMU and live patches it, showing the behaviour before, during and after.
/// </summary>
internal static class DemoCommand
{
    public const string DefaultKernel = "6.1.0-56-cloud-amd64";

    public static Command Create()
    {
        var kernelOption = new Option<string>("--kernel")
        { Description = "Kernel release to demonstrate on", DefaultValueFactory = _ => DefaultKernel };
        var command = new Command("demo",
            "Build a livepatch from a source fix for a real Debian kernel, boot that kernel in the lab and live " +
            "patch it, showing /proc/cmdline before, patched, and after removal") { kernelOption };
        command.Action = Cli.Run(async parse =>
        {
            var release = KernelCommands.ParseRelease(parse.GetValue(kernelOption)!);
            var cache = DebianKernelArchive.DefaultCacheRoot;
            var work = Directory.CreateTempSubdirectory("kintsugi-demo-").FullName;
            try
            {
                var patch = Path.Combine(work, "proc-cmdline.patch");
                await using (var resource =
                    typeof(DemoCommand).Assembly.GetManifestResourceStream("demo/proc-cmdline.patch")!)
                await using (var file = File.Create(patch))
                    await resource.CopyToAsync(file);
                Cli.Progress($"building a livepatch from {Path.GetFileName(patch)} for {release} (the first time " +
                    "fetches and prepares the kernel's source: a few minutes)");
                var builder = new KernelPatchBuilder(new DebianKernelArchive(cache, Cli.Progress), LabCommands.Machine,
                    Cli.Progress);
                var build =
                    await builder.BuildAsync(new KernelBuildRequest(new TargetReference.Debian(release), [patch],
                    "kintsugi_demo", [], null, Path.Combine(work, "out")));
                Cli.Progress(build.Message);
                var module = build.Module ?? throw new ModuleBuildException("the demonstration fix built no module");
                var name = build.Manifest!.Module;

                var script = $"""
                    set -e
                    echo "== the running kernel"; uname -r; kintsugi status
                    echo "== /proc/cmdline before"; cat /proc/cmdline
                    echo "== kintsugi kernel load /demo/{name}.ko"; kintsugi kernel load /demo/{name}.ko
                    echo "== /proc/cmdline while patched"; cat /proc/cmdline
                    kintsugi kernel list
                    echo "== kintsugi kernel unload {name}"; kintsugi kernel unload {name}
                    echo "== /proc/cmdline after"; cat /proc/cmdline
                    """;
                var spec = new LabRunSpec(release, script, [new GuestFile(module, $"/demo/{name}.ko")],
                    TimeSpan.FromMinutes(5));
                var result = await LabCommands.Machine().RunAsync(spec, Console.WriteLine);
                Cli.Progress(result.Describe());
                if (result.TimedOut) return (int)ExitCode.LabTimeout;
                var patched = result.Output.Contains("live patched by Kintsugi", StringComparison.Ordinal);
                Cli.Progress(result.ExitCode == 0 && patched
                    ? "demo succeeded: the running kernel was patched from a source fix and restored, without a reboot"
                    : "demo failed");
                return result.ExitCode == 0 && patched ? 0 : result.ExitCode ?? (int)ExitCode.LabFailure;
            }
            finally { Directory.Delete(work, recursive: true); }
        });
        return command;
    }
}
