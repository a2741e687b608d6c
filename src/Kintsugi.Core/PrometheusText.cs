using System.Globalization;
using System.Text;

namespace Kintsugi;

/// <summary>
/// The Prometheus text exposition format as node_exporter's textfile collector reads it: gauges with their help and
/// type lines, label values escaped as the format requires.
/// </summary>
public sealed class PrometheusText
{
    private readonly StringBuilder _text = new();

    /// <param name="samples">Each sample's labels (<c>name="value",...</c>, empty for none) and value.</param>
    public void Gauge(string name, string help, IEnumerable<(string Labels, double Value)> samples)
    {
        _text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} gauge\n");
        foreach (var (labels, value) in samples)
            _text.Append(CultureInfo.InvariantCulture,
                $"{name}{(labels.Length > 0 ? "{" + labels + "}" : "")} {value}\n");
    }

    /// <summary>A label value with backslashes, quotes and newlines escaped.</summary>
    public static string Label(string value) => value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    public override string ToString() => _text.ToString();
}
