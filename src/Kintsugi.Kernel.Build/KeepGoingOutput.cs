using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.Build;

/// <summary>A unit that did not compile, with its own compiler errors (null when make's output did not tell them
/// apart).</summary>
public sealed record UnitCompileFailure(Units.TranslationUnit Unit, string? Errors);

/// <summary>
/// Reads the output of <c>make -k --output-sync=target 2>&amp;1</c> over many units: each target's output comes in one
/// piece, kbuild's "  CC [M]  dir/unit.o" line first, then the compiler's diagnostics, then make's
/// "*** [...: dir/unit.o] Error 1" for a unit that failed.
/// </summary>
public static partial class KeepGoingOutput
{
    /// <summary>The lines from each failed object's CC line to make's error for it, by object path.</summary>
    public static IReadOnlyDictionary<string, string> ErrorsByObject(string output)
    {
        var errors = new Dictionary<string, string>(StringComparer.Ordinal);
        var lines = output.Split('\n');
        var started = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < lines.Length; i++)
        {
            if (CompileLine().Match(lines[i]) is { Success: true } compile)
                started[compile.Groups["object"].Value] = i;
            else if (ErrorLine().Match(lines[i]) is { Success: true } error
                && started.TryGetValue(error.Groups["target"].Value, out var start)
                && !errors.ContainsKey(error.Groups["target"].Value))
                errors[error.Groups["target"].Value] = string.Join('\n',
                    lines[start..(i + 1)].Where(l => l.Length > 0));
        }
        return errors;
    }

    [GeneratedRegex(@"^  CC (?:\[M\] )?\s*(?<object>\S+\.o)\s*$")]
    private static partial Regex CompileLine();

    // make[4]: *** [scripts/Makefile.build:255: drivers/firmware/efi/efi.o] Error 1
    [GeneratedRegex(@"^make(?:\[\d+\])?: \*\*\* \[(?:[^\]]*?:\d+: )?(?<target>[^\]\s]+)\] Error \d+")]
    private static partial Regex ErrorLine();
}
