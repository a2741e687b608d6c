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
}
