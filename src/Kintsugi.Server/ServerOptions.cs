namespace Kintsugi.Server;

/// <summary>Everything <c>kintsugi-server run</c> is configured with; every field has a working default.</summary>
public sealed record ServerOptions
{
    /// <summary>Holds the SQLite database, the bundle store, the TLS certificate and the first admin token.</summary>
    public required string DataDirectory { get; init; }

    /// <summary>PostgreSQL instead of the embedded SQLite (several replicas may share it).</summary>
    public string? PostgresConnectionString { get; init; }

    /// <summary>Where to listen: https://host:port and/or http://host:port.</summary>
    public IReadOnlyList<string> Urls { get; init; } = ["https://0.0.0.0:8443"];

    /// <summary>A PKCS#12 or PEM certificate; when null one is generated in the data directory on first run.</summary>
    public string? TlsCertificate { get; init; }
    public string? TlsKey { get; init; }

    /// <summary>Extra DNS names and addresses for the generated certificate.</summary>
    public IReadOnlyList<string> TlsNames { get; init; } = [];

    public int CheckInSeconds { get; init; } = 3600;
    public int EventsWaitSeconds { get; init; } = 30;

    /// <summary>How often a replica looks for an epoch moved by another replica.</summary>
    public TimeSpan EpochPollInterval { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>How often delayed and health-gated promotions are evaluated.</summary>
    public TimeSpan PromotionInterval { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Enrollments allowed per source address per minute.</summary>
    public int EnrollmentsPerMinute { get; init; } = 30;

    /// <summary>Failed API-token authentications allowed per source address per minute.</summary>
    public int AuthFailuresPerMinute { get; init; } = 60;

    /// <summary>A directory of trusted publisher keys (TrustStore layout) imported at start.</summary>
    public string? TrustDirectory { get; init; }

    /// <summary>Channels created on first start, in order.</summary>
    public IReadOnlyList<string> InitialChannels { get; init; } = ["canary", "production"];

    /// <summary>
    /// Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: behind them, the audit log and
    /// the rate limits see the real client. Headers from any other address are ignored.
    /// </summary>
    public IReadOnlyList<System.Net.IPAddress> TrustedProxies { get; init; } = [];

    /// <summary>A machine silent for this many check-in intervals counts as stale.</summary>
    public double StaleAfterIntervals { get; init; } = 2.5;

    /// <summary>
    /// The online timestamp key (docs/bundle-format.md): it extends release metadata's freshness and nothing else.
    /// Default DATA/keys/timestamp.pem, made at first start; replicas must share one file.
    /// </summary>
    public string? TimestampKey { get; init; }

    /// <summary>How far ahead a timestamp extends release metadata's freshness.</summary>
    public TimeSpan TimestampLifetime { get; init; } = TimeSpan.FromDays(1);

    public string TimestampKeyPath => TimestampKey ?? Path.Combine(DataDirectory, "keys", "timestamp.pem");

    public string DatabasePath => Path.Combine(DataDirectory, "kintsugi.db");
    public string BundleDirectory => Path.Combine(DataDirectory, "bundles");
}
