using System.CommandLine;
using Kintsugi.Cli;

using Kintsugi;

var root = new RootCommand($"""
    Kintsugi: live patching for Linux fleets, self-hosted.

    Exit codes:
      0    success
      1    internal error (a bug: rerun with --verbose and report it)
      2    usage error
      3    input refused (not a module, not a livepatch, built for another kernel, malformed)
      4    livepatch transition failed (it was reverted) or the kernel refused to remove a module;
           user apply/revert: a process could not be changed (busy or failed; it was left as it was)
      5    environment lacks something (not root, no livepatch support, a tool missing)
      6    not found (a kernel in the archive, a loaded patch; user: no process maps the object or has the patch)
      7    disabled by the kill switch (kintsugi.enable=0 or /etc/kintsugi/disabled)
      8    kernel test: the module failed its test in the lab
      9    kernel build: the fix changes no machine code of the target; no module written
      10   kernel catch-up: a module was built, but some changed files were refused or still need a reboot
      11   agent check: the machine is not up to date (a newer release is offered, or its level was revoked)
      124  lab run: the guest did not finish within --timeout
      125  lab run: the lab itself failed; otherwise lab run exits with the guest command's status
      130  kernel build, kernel catch-up: interrupted (SIGINT, SIGTERM); what finished is kept, run it again
    """);
root.Options.Add(Cli.Verbose);
root.Subcommands.Add(StatusCommand.Create());
root.Subcommands.Add(KernelCommands.Create());
root.Subcommands.Add(LabCommands.Create());
root.Subcommands.Add(KeysCommands.Create());
root.Subcommands.Add(BundleCommands.Create());
root.Subcommands.Add(AgentCommands.Create());
root.Subcommands.Add(UserCommands.Create());
root.Subcommands.Add(UnameCommand.Create());
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(ServerCommands.Create());
root.Subcommands.Add(KillSwitchCommands.Disable());
root.Subcommands.Add(KillSwitchCommands.Enable());
root.Subcommands.Add(new Command("version", "Print the version.")
{
    Action =
    Cli.Run(_ => { Console.WriteLine(Cli.Version); return Task.FromResult(0); })
});

CommandLineRules.InstallExamples(root);

var parse = root.Parse(args);
if (CommandLineRules.UsageErrors(parse) is { Count: > 0 } errors)
    return CommandLineRules.ReportUsageErrors(parse, errors);
return await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = Cli.TerminationGrace });
