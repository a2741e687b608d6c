using System.Security.Cryptography;
using System.Text;

namespace Kintsugi.Server;

/// <summary>Bearer secrets: random, prefixed by kind (so a leaked one is recognizable), stored only as
/// SHA-256.</summary>
public static class Secrets
{
    public const string EnrollmentTokenPrefix = "ket_";
    public const string MachineCredentialPrefix = "kmc_";
    public const string ApiTokenPrefix = "kat_";

    public static string New(string prefix) => prefix + Base64Url(RandomNumberGenerator.GetBytes(32));

    public static string NewId(string prefix, int bytes = 8) => prefix
        + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(bytes));

    public static string Hash(string secret) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    /// <summary>Plausible shape only: the prefix and 43 URL-safe base64 characters.</summary>
    public static bool LooksLike(string? secret, string prefix)
    {
        if (secret is null || secret.Length != prefix.Length + 43
            || !secret.StartsWith(prefix, StringComparison.Ordinal)) return false;
        for (var i = prefix.Length; i < secret.Length; i++)
            if (!(char.IsAsciiLetterOrDigit(secret[i]) || secret[i] is '-' or '_')) return false;
        return true;
    }

    private static string Base64Url(byte[] bytes) =>
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}

/// <summary>What an API token may do; each role includes the ones below it.</summary>
public enum Role
{
    /// <summary>Reads everything: machines, releases, reports, the audit log; changes nothing.</summary>
    Auditor = 1,
    /// <summary>Also publishes, promotes, revokes, manages enrollment tokens and machines.</summary>
    Operator = 2,
    /// <summary>Also manages API tokens, publisher keys and channels.</summary>
    Admin = 3,
}

public static class Roles
{
    public static string ToWire(this Role role) =>
        role switch { Role.Admin => "admin", Role.Operator => "operator", _ => "auditor" };

    public static bool TryParse(string? text, out Role role)
    {
        role = text switch { "admin" => Role.Admin, "operator" => Role.Operator, "auditor" => Role.Auditor, _ => 0 };
        return role != 0;
    }
}
