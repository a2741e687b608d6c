using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.Build;

/// <summary>
/// A compile that something outside the build stopped: the out-of-memory killer, a signal to make or to the compiler.
/// It says nothing about the sources, so it must never become a refusal of the fix (which a catch-up would keep and
/// reuse): the build stops as interrupted and a second run does the work again.
/// </summary>
public static partial class BuildInterruption
{
    /// <summary>Why the command was interrupted, or null when it ran to its own end (success or failure).</summary>
    public static string? Of(CommandResult result)
    {
        // .NET reports a child killed by signal N as 128 + N.
        if (result.ExitCode is > 128 and < 128 + 65)
            return $"{SignalName(result.ExitCode - 128)} stopped make";
        foreach (var text in new[] { result.StandardError, result.StandardOutput })
        {
            if (CompilerKilled().Match(text) is { Success: true } driver)
                return $"the compiler was stopped by a signal ({driver.Groups[1].Value}, program " +
                    $"{driver.Groups[2].Value})";
            if (RecipeKilled().Match(text) is { Success: true } recipe)
                return $"the command making {recipe.Groups[1].Value} was stopped by a signal " +
                    $"({recipe.Groups[2].Value})";
        }
        return null;
    }

    /// <summary>Throws when the command was interrupted from outside.</summary>
    public static void ThrowIfInterrupted(CommandResult result, string what)
    {
        if (Of(result) is { } why)
            throw new BuildInterruptedException($"{what} was interrupted: {why}, not by an error in the sources " +
                "(out of memory, or a process or person stopped it); nothing was refused: run the same command again " +
                "(the work already finished is kept)");
    }

    private static string SignalName(int signal) => signal switch
    {
        1 => "SIGHUP",
        2 => "SIGINT",
        9 => "SIGKILL",
        15 => "SIGTERM",
        _ => $"signal {signal}",
    };

    // gcc's driver: "gcc: fatal error: Killed signal terminated program cc1".
    [GeneratedRegex(@"fatal error: (\w+) signal terminated program (\S+)")]
    private static partial Regex CompilerKilled();

    // make, when a recipe's shell dies of a signal: "make[2]: *** [scripts/Makefile.build:250: fs/x.o] Killed".
    [GeneratedRegex(@"make(?:\[\d+\])?: \*\*\* \[[^\]]*?:\s*([^\]\s]+)\] (Killed|Terminated|Interrupt|Hangup)\s*$",
        RegexOptions.Multiline)]
    private static partial Regex RecipeKilled();
}

/// <summary>
/// A build stopped from outside (a signal, the out-of-memory killer, a lab boot that did not finish): nothing about
/// the input is known.
/// </summary>
public sealed class BuildInterruptedException(string message) : KintsugiException(message)
{
    public override ExitCode ExitCode => ExitCode.Environment;
}
