using System.CommandLine;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Kintsugi.Lab;

namespace Kintsugi.Cli;

/// <summary>
/// kintsugi demo: the whole job at this stage, end to end. Fetches a real Debian kernel, builds a livepatch
/// for it, boots it under QEMU and live patches it, showing the behaviour before, during and after.
/// </summary>
internal static class DemoCommand
{
    public const string DefaultKernel = "6.1.0-56-cloud-amd64";

    public static Command Create()
    {
        var kernelOption = new Option<string>("--kernel") { Description = "Kernel release to demonstrate on", DefaultValueFactory = _ => DefaultKernel };
        var command = new Command("demo", "Boot a real Debian kernel in the lab and live patch it, showing /proc/cmdline before, patched, and after removal") { kernelOption };
        command.Action = Cli.Run(async parse =>
        {
            var release = KernelCommands.ParseRelease(parse.GetValue(kernelOption)!);
            var cache = DebianKernelArchive.DefaultCacheRoot;
            var kernel = await new DebianKernelArchive(cache, Cli.Progress).FetchAsync(release, KernelParts.Image | KernelParts.Headers);
            Cli.Progress($"kernel {kernel.Target}");

            var source = Directory.CreateTempSubdirectory("kintsugi-demo-src-").FullName;
            var build = Path.Combine(cache, "demo", release.Value);
            try
            {
                foreach (var name in typeof(DemoCommand).Assembly.GetManifestResourceNames().Where(n => n.StartsWith("demo/", StringComparison.Ordinal)))
                {
                    await using var resource = typeof(DemoCommand).Assembly.GetManifestResourceStream(name)!;
                    await using var file = File.Create(Path.Combine(source, name["demo/".Length..]));
                    await resource.CopyToAsync(file);
                }
                Cli.Progress("building the demo livepatch with kbuild against the kernel's own headers");
                var modules = await ExternalModuleBuild.BuildAsync(kernel, source, build);
                var module = modules.Single();

                const string script = """
                    set -e
                    echo "== the running kernel"; uname -r; kintsugi status
                    echo "== /proc/cmdline before"; cat /proc/cmdline
                    echo "== kintsugi kernel load /demo/kintsugi_demo.ko"; kintsugi kernel load /demo/kintsugi_demo.ko
                    echo "== /proc/cmdline while patched"; cat /proc/cmdline
                    kintsugi kernel list
                    echo "== kintsugi kernel unload kintsugi_demo"; kintsugi kernel unload kintsugi_demo
                    echo "== /proc/cmdline after"; cat /proc/cmdline
                    """;
                var spec = new LabRunSpec(release, script, [new GuestFile(module, "/demo/kintsugi_demo.ko")], TimeSpan.FromMinutes(5));
                var result = await LabCommands.Machine().RunAsync(spec, Console.WriteLine);
                Cli.Progress(result.Describe());
                if (result.TimedOut) return (int)ExitCode.LabTimeout;
                var patched = result.Output.Contains("live patched by Kintsugi", StringComparison.Ordinal);
                Cli.Progress(result.ExitCode == 0 && patched ? "demo succeeded: the running kernel was patched and restored without a reboot" : "demo failed");
                return result.ExitCode == 0 && patched ? 0 : result.ExitCode ?? (int)ExitCode.LabFailure;
            }
            finally { Directory.Delete(source, recursive: true); }
        });
        return command;
    }
}
