namespace Kintsugi.Server;

/// <summary>What kind of refusal a <see cref="FleetException"/> is; the API edge turns it into an HTTP
/// status.</summary>
public enum FleetRefusal
{
    /// <summary>The request is malformed or out of range.</summary>
    Invalid,

    /// <summary>A presented secret (an enrollment token) is unknown, revoked, expired or used up.</summary>
    NotAuthenticated,

    /// <summary>The named release, machine, channel, key or token does not exist.</summary>
    NotFound,

    /// <summary>The request clashes with the fleet's state (a level already published, a retired key...).</summary>
    Conflict,

    /// <summary>A signed input does not verify against the server's trusted publisher keys.</summary>
    Unverified,
}

/// <summary>
/// The fleet (releases, channels, machines, tokens, keys, reports) refused a request; the message says what to do.
/// Domain code throws this and knows nothing of HTTP: <c>Api/Http.cs</c> maps <see cref="Refusal"/> to a status.
/// </summary>
public sealed class FleetException(FleetRefusal refusal, string message) : Exception(message)
{
    public FleetRefusal Refusal { get; } = refusal;

    public static FleetException Invalid(string message) => new(FleetRefusal.Invalid, message);
    public static FleetException NotAuthenticated(string message) => new(FleetRefusal.NotAuthenticated, message);
    public static FleetException NotFound(string message) => new(FleetRefusal.NotFound, message);
    public static FleetException Conflict(string message) => new(FleetRefusal.Conflict, message);
    public static FleetException Unverified(string message) => new(FleetRefusal.Unverified, message);
}
