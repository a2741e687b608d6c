using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Kintsugi.Protocol;

namespace Kintsugi.Server.Api;

/// <summary>A monotonically increasing counter.</summary>
public sealed class Counter
{
    private long _value;
    public void Increment() => Interlocked.Increment(ref _value);
    public long Value => Interlocked.Read(ref _value);
}

/// <summary>A Prometheus histogram with fixed buckets (seconds).</summary>
public sealed class Histogram
{
    public static readonly double[] Buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
        30, 60];
    private readonly long[] _counts = new long[Buckets.Length + 1];
    private long _sumMicroseconds;

    public void Observe(double seconds)
    {
        var i = 0;
        while (i < Buckets.Length && seconds > Buckets[i]) i++;
        Interlocked.Increment(ref _counts[i]);
        Interlocked.Add(ref _sumMicroseconds, (long)(seconds * 1_000_000));
    }

    public void Write(StringBuilder output, string name, string labels)
    {
        long cumulative = 0;
        for (var i = 0; i < Buckets.Length; i++)
        {
            cumulative += Interlocked.Read(ref _counts[i]);
            output.Append(CultureInfo.InvariantCulture,
                $"{name}_bucket{{{labels},le=\"{Buckets[i]}\"}} {cumulative}\n");
        }
        cumulative += Interlocked.Read(ref _counts[^1]);
        output.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n");
        output.Append(CultureInfo.InvariantCulture,
            $"{name}_sum{{{labels}}} {Interlocked.Read(ref _sumMicroseconds) / 1e6}\n");
        output.Append(CultureInfo.InvariantCulture, $"{name}_count{{{labels}}} {cumulative}\n");
    }
}

/// <summary>The server's own counters; fleet gauges are computed from the database when scraped.</summary>
public sealed class ServerMetrics
{
    public Counter Enrollments { get; } = new();
    public Counter EnrollmentsRateLimited { get; } = new();
    public ConcurrentDictionary<CheckInAction, Counter> CheckIns { get; } = new();
    public ConcurrentDictionary<(string Method, string Route, int StatusClass), Histogram> Requests { get; } = new();

    public void CountCheckIn(CheckInAction action) => CheckIns.GetOrAdd(action, _ => new Counter()).Increment();

    /// <summary>The methods the API answers; any other name a client sends is counted as <c>other</c>.</summary>
    private static readonly string[] KnownMethods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];

    /// <summary>
    /// Counts a request. Every label is from a bounded set (the method, the matched route pattern, the status
    /// class), so anonymous requests with made-up method names or paths cannot grow the series without bound.
    /// </summary>
    public void ObserveRequest(string method, string route, int status, double seconds)
    {
        var known = Array.Find(KnownMethods, m => string.Equals(m, method, StringComparison.OrdinalIgnoreCase))
            ?? "other";
        Requests.GetOrAdd((known, route, Math.Clamp(status / 100, 1, 5)), _ => new Histogram()).Observe(seconds);
    }
}
