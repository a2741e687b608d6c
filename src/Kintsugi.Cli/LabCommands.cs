using System.CommandLine;
using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;

namespace Kintsugi.Cli;

/// <summary>kintsugi lab ...: boot exact distribution kernels under QEMU and run commands in them.</summary>
internal static class LabCommands
{
    public static Command Create()
    {
        var lab = new Command("lab", "Boot an exact distribution kernel under QEMU and run commands in it");
        lab.Subcommands.Add(RunCommand());
        lab.Subcommands.Add(ShellCommand());
        return lab;
    }

    private sealed record CommonOptions(Option<string> Kernel, Option<string[]> Add, Option<string?> Disk,
        Option<string[]> Append)
    {
        public static CommonOptions Create() => new(
            new Option<string>("--kernel")
            {
                Description = "Kernel release as uname -r prints it (fetched from the Debian archive)",
                Required = true
            },
            new Option<string[]>("--add")
            {
                Description = "HOSTPATH:GUESTPATH: copy a host file into the guest (repeatable)",
                AllowMultipleArgumentsPerToken = false
            },
            new Option<string?>("--disk")
            {
                Description =
                "A persistent disk image (created if missing) that keeps /var/lib/kintsugi, /etc/kintsugi and " +
                "/etc/systemd across boots"
            },
            new Option<string[]>("--append")
            {
                Description =
                "Extra kernel command line argument (repeatable), for example kintsugi.enable=0"
            });

        public void AddTo(Command command)
        {
            command.Options.Add(Kernel);
            command.Options.Add(Add);
            command.Options.Add(Disk);
            command.Options.Add(Append);
        }

        public LabRunSpec Spec(ParseResult parse, string guestCommand, TimeSpan timeout, bool interactive) => new(
            KernelCommands.ParseRelease(parse.GetValue(Kernel)!), guestCommand,
            (parse.GetValue(Add) ?? []).Select(GuestFile.Parse).ToList(), timeout,
            parse.GetValue(Disk), parse.GetValue(Append) ?? [], interactive);
    }

    public static LabMachine Machine()
    {
        var cache = DebianKernelArchive.DefaultCacheRoot;
        return new LabMachine(new DebianKernelArchive(cache, Cli.Progress), cache, GuestBinary.Locate(), Cli.Progress);
    }

    private static Command RunCommand()
    {
        var common = CommonOptions.Create();
        var timeout = new Option<int>("--timeout")
        { Description = "Seconds before the guest is stopped (exit 124)", DefaultValueFactory = _ => 300 };
        var guest = new Argument<string[]>("command")
        {
            Description = "The guest command, after --; its words are joined and run by the guest's sh",
            Arity = ArgumentArity.OneOrMore
        };
        var command = new Command("run",
            "Boot the kernel, run a command in the guest, stream the serial console, and exit with the command's " +
            "status")
        {
            timeout, guest,
        };
        common.AddTo(command);
        command.Action = Cli.Run(async parse =>
        {
            var spec = common.Spec(parse, string.Join(' ', parse.GetValue(guest)!),
                TimeSpan.FromSeconds(parse.GetValue(timeout)), interactive: false);
            var result = await Machine().RunAsync(spec, Console.WriteLine);
            Cli.Progress(result.Describe());
            if (result.TimedOut) return (int)ExitCode.LabTimeout;
            return result.ExitCode ?? (int)ExitCode.LabFailure;
        });
        return command;
    }

    private static Command ShellCommand()
    {
        var common = CommonOptions.Create();
        var command = new Command("shell",
            "Boot the kernel with an interactive shell on the serial console (exit the shell to power off; Ctrl-A X " +
            "quits QEMU)");
        common.AddTo(command);
        command.Action = Cli.Run(async parse =>
        {
            var spec = common.Spec(parse, "sh", TimeSpan.MaxValue, interactive: true);
            var result = await Machine().RunAsync(spec);
            return result.ExitCode ?? 0;
        });
        return command;
    }
}
