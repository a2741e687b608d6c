using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.Build.Toolchains;

/// <summary>
/// The compiler a kernel was built with, as its <c>.config</c> records it: <c>CONFIG_CC_VERSION_TEXT</c> is the
/// first line of <c>$(CC) --version</c>, so it names both the command kbuild ran (its first word, for example
/// <c>gcc-10</c> or <c>x86_64-linux-gnu-gcc-14</c>) and the exact build of it (<c>(Debian 10.2.1-6) 10.2.1
/// 20210110</c>). A livepatch compiled by anything else can differ from the shipped code, so this text must match
/// exactly.
/// </summary>
public sealed partial record CompilerRequirement(string Command, string VersionText)
{
    public static CompilerRequirement FromConfig(string configPath)
    {
        if (!File.Exists(configPath))
            throw new ToolchainException(
                $"{configPath} does not exist: the kernel's .config is needed to know which compiler built it");
        foreach (var line in File.ReadLines(configPath))
        {
            var match = VersionTextLine().Match(line);
            if (match.Success) return Parse(match.Groups["text"].Value, configPath);
        }
        throw new ToolchainException(
            $"{configPath} has no CONFIG_CC_VERSION_TEXT (kernels before 5.8 do not record their compiler): " +
            "the compiler cannot be checked, so nothing is built for this kernel");
    }

    public static CompilerRequirement Parse(string versionText, string where = "the kernel's configuration")
    {
        var text = versionText.Trim();
        var command = text.Split(' ', 2)[0];
        if (command.Length == 0 || !SafeCommand().IsMatch(command))
            throw new ToolchainException(
                $"{where} names the compiler '{text}', whose first word is not a command name");
        return new CompilerRequirement(command, text);
    }

    /// <summary>
    /// The Debian package that installs <see cref="Command"/> (gcc-10 for <c>gcc-10</c> and
    /// <c>x86_64-linux-gnu-gcc-10</c>; gcc-12 for a plain <c>gcc</c> whose version is 12.x); null for another compiler.
    /// </summary>
    public string? DebianPackage
    {
        get
        {
            var versioned = VersionedGcc().Match(Command);
            if (versioned.Success) return $"gcc-{versioned.Groups["major"].Value}";
            var plain = PlainGccVersion().Match(VersionText);
            return Command is "gcc" or "x86_64-linux-gnu-gcc" && plain.Success ? $"gcc-{plain.Groups["major"].Value}"
                : null;
        }
    }

    public override string ToString() => VersionText;

    [GeneratedRegex("^CONFIG_CC_VERSION_TEXT=\"(?<text>.*)\"$")]
    private static partial Regex VersionTextLine();

    [GeneratedRegex("^[A-Za-z0-9_.+-]+$")]
    private static partial Regex SafeCommand();

    [GeneratedRegex(@"^(?:x86_64-linux-gnu-)?gcc-(?<major>\d+)$")]
    private static partial Regex VersionedGcc();

    [GeneratedRegex(@"\(Debian (?<major>\d+)\.")]
    private static partial Regex PlainGccVersion();
}

/// <summary>The compiler a kernel needs is not available, or a build root could not be made.</summary>
public sealed class ToolchainException(string message, ExitCode exitCode = ExitCode.Environment,
    Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = exitCode;
}
