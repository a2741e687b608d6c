using System.CommandLine;
using System.Runtime.InteropServices;
using Kintsugi.Kernel;

namespace Kintsugi.Cli;

/// <summary>
/// kintsugi uname: uname(1) with the effective kernel version, for vulnerability scanners and inventory
/// tools. The release (-r) is the running one (the ABI a module must match); the version (-v) names the
/// package version the applied livepatch level makes this kernel equivalent to.
/// </summary>
internal static class UnameCommand
{
    private static readonly (char Letter, string Long, string Description)[] Fields =
    [
        ('s', "kernel-name", "the kernel name"),
        ('n', "nodename", "the network node hostname"),
        ('r', "kernel-release", "the kernel release"),
        ('v', "kernel-version", "the effective kernel version (the applied livepatch level's package version)"),
        ('m', "machine", "the machine hardware name"),
        ('p', "processor", "the processor type (omitted by -a when unknown)"),
        ('i', "hardware-platform", "the hardware platform (omitted by -a when unknown)"),
        ('o', "operating-system", "the operating system"),
    ];

    public static Command Create()
    {
        // uname's own flags include -v, which the root's --verbose also claims, and combine (-sr):
        // they are read from the raw tokens rather than declared as options.
        var command = new Command("uname",
            "Print system information like uname(1), with the effective (livepatched) kernel version: -a -s -n -r -v " +
            "-m -p -i -o, combinable (-srv)")
        {
            TreatUnmatchedTokensAsErrors = false,
        };
        command.Action = Cli.Run(parse =>
        {
            var tokens = parse.Tokens.SkipWhile(t => t.Value != "uname").Skip(1).Select(t => t.Value).ToList();
            var selected = new HashSet<char>();
            var all = false;
            foreach (var token in tokens)
            {
                if (token == "--all") { all = true; continue; }
                if (token.StartsWith("--", StringComparison.Ordinal))
                {
                    var field = Fields.FirstOrDefault(f => f.Long == token[2..]);
                    if (field.Letter == default) throw new UsageException($"uname: unknown option {token}");
                    selected.Add(field.Letter);
                    continue;
                }
                if (token.Length < 2 || token[0] != '-')
                    throw new UsageException($"uname: unexpected argument '{token}'");
                foreach (var letter in token[1..])
                {
                    if (letter == 'a') all = true;
                    else if (Fields.Any(f => f.Letter == letter)) selected.Add(letter);
                    else throw new UsageException($"uname: invalid option -- '{letter}'");
                }
            }
            if (!all && selected.Count == 0) selected.Add('s');
            var values = Values();
            var words = Fields
                .Where(f => all ? !(f.Letter is 'p' or 'i') || values[f.Letter] != "unknown"
                    : selected.Contains(f.Letter))
                .Select(f => values[f.Letter]);
            Console.WriteLine(string.Join(' ', words));
            return Task.FromResult(0);
        });
        return command;
    }

    private static Dictionary<char, string> Values()
    {
        var status = MachineStatus.Read(MachinePaths.Default);
        var machine = RuntimeInformation.OSArchitecture switch
        {
            Architecture.X64 => "x86_64",
            Architecture.Arm64 => "aarch64",
            var other => other.ToString().ToLowerInvariant(),
        };
        return new()
        {
            ['s'] = File.ReadAllText("/proc/sys/kernel/ostype").Trim(),
            ['n'] = File.ReadAllText("/proc/sys/kernel/hostname").Trim(),
            ['r'] = status.Release,
            ['v'] = status.EffectiveVersion,
            ['m'] = machine,
            ['p'] = "unknown",
            ['i'] = "unknown",
            ['o'] = "GNU/Linux",
        };
    }
}
