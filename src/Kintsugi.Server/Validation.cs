namespace Kintsugi.Server;

/// <summary>Input checks shared by every endpoint: a refusal names the field and what is allowed.</summary>
public static class Validation
{
    /// <summary>Channel names: 1 to 32 of a-z, 0-9, '-', starting with a letter.</summary>
    public static string ChannelName(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 32 || !char.IsAsciiLetterLower(name[0])
            || !name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-'))
            throw FleetException.Invalid($"'{Shorten(name)}' is not a channel name (1 to 32 of a-z, 0-9 and '-', " +
                $"starting with a letter)");
        return name;
    }

    /// <summary>A release id (r_ and 16 hex digits) or a bundle digest (64 hex digits).</summary>
    public static string ReleaseReference(string? text)
    {
        if (text is null
            || !((text.Length == 18 && text.StartsWith("r_", StringComparison.Ordinal) && IsLowerHex(text[2..]))
            || (text.Length == 64 && IsLowerHex(text))))
            throw FleetException.Invalid($"'{Shorten(text)}' is not a release id (r_ and 16 hex digits) or a bundle " +
                $"sha256");
        return text;
    }

    public static string MachineReference(string? text)
    {
        if (text is null || text.Length != 18 || !text.StartsWith("m_", StringComparison.Ordinal)
            || !IsLowerHex(text[2..]))
            throw FleetException.Invalid($"'{Shorten(text)}' is not a machine id (m_ and 16 hex digits)");
        return text;
    }

    /// <summary>Printable text without control characters, at most <paramref name="max"/> characters; null stays
    /// null.</summary>
    public static string? OptionalText(string field, string? value, int max)
    {
        if (value is null) return null;
        if (value.Length > max) throw FleetException.Invalid($"{field} is longer than {max} characters");
        foreach (var c in value)
            if (char.IsControl(c)
                && c is not '\n' and not '\t') throw FleetException.Invalid($"{field} contains a control character " +
                $"(U+{(int)c:X4})");
        return value;
    }

    public static string RequiredText(string field, string? value, int max)
    {
        if (string.IsNullOrWhiteSpace(value)) throw FleetException.Invalid($"{field} is required");
        return OptionalText(field, value, max)!;
    }

    /// <summary>A hostname or other identifier: 1 to <paramref name="max"/> of letters, digits and
    /// <c>.-_:</c>.</summary>
    public static string Identifier(string field, string? value, int max)
    {
        if (string.IsNullOrEmpty(value) || value.Length > max
            || !value.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' or ':'))
            throw FleetException.Invalid($"{field} '{Shorten(value)}' is not valid (1 to {max} of letters, digits " +
                $"and . - _ :)");
        return value;
    }

    /// <summary>A package or program version: 1 to <paramref name="max"/> of letters, digits and
    /// <c>.-_:+~</c>.</summary>
    public static string Version(string field, string? value, int max)
    {
        if (string.IsNullOrEmpty(value) || value.Length > max
            || !value.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' or ':' or '+' or '~'))
            throw FleetException.Invalid($"{field} '{Shorten(value)}' is not valid (1 to {max} of letters, digits " +
                $"and . - _ : + ~)");
        return value;
    }

    public static bool IsLowerHex(string text) => text.All(c => char.IsAsciiDigit(c) || c is >= 'a' and <= 'f');

    private static string Shorten(string? text) => text is null ? "" : text.Length > 40 ? text[..40] + "…" : text;
}
