using System.Text.RegularExpressions;
using Kintsugi.Lab;

namespace Kintsugi.Testing;

/// <summary>Reading a lab script's output, which marks each part with a line <c>@name</c>.</summary>
public static class GuestOutput
{
    /// <summary>The lines after <c>@name</c> up to the next <c>@</c> line, trimmed; throws (failing the test) when the
    /// marker is missing.</summary>
    public static string Section(string output, string name)
    {
        var start = output.IndexOf($"@{name}\n", StringComparison.Ordinal);
        if (start < 0) throw new InvalidOperationException($"no section @{name} in the guest's output:\n{output}");
        start += name.Length + 2;
        // Search from the header's own newline, so that an empty section ends at once.
        var end = output.IndexOf("\n@", start - 1, StringComparison.Ordinal);
        return end < 0 ? output[start..].Trim() : end < start ? "" : output[start..end].Trim();
    }

    /// <summary>The status a guest command reported with <c>echo "@label=$?"</c>; throws (failing the test) when the
    /// line is missing.</summary>
    public static int ReturnCode(string output, string label)
    {
        var match = Regex.Match(output, $"^@{label}=(\\d+)$", RegexOptions.Multiline);
        if (!match.Success) throw new InvalidOperationException($"no @{label}= in:\n{output}");
        return int.Parse(match.Groups[1].Value);
    }

    /// <summary>Throws (failing the test) unless the guest's script exited 0, with its output and console.</summary>
    public static void Succeeded(LabRunResult result)
    {
        if (result.ExitCode != 0)
            throw new InvalidOperationException(
                $"{result.Describe()}\n--- output\n{result.Output}\n--- console\n{result.Console}");
    }
}
