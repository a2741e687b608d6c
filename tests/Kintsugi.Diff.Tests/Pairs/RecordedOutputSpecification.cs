using System.Security.Cryptography;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>
/// The differ's whole verdict on every pair (output bytes, functions, data, refusals, references) is recorded in
/// tests/fixtures/diff-pairs/outputs.txt. A refactoring leaves it byte-identical; a change of behaviour
/// re-records it (KINTSUGI_RECORD_DIFF_OUTPUTS=1) so that the review sees exactly what changed.
/// </summary>
public class RecordedOutputSpecification
{
    private static string Recorded => Path.Combine(DiffPairs.Fixtures, "outputs.txt");

    [Fact]
    public void Every_pair_gives_the_recorded_verdict_and_output_bytes()
    {
        var actual = DiffPairs.Names.Select(Fingerprint).ToList();
        if (Environment.GetEnvironmentVariable("KINTSUGI_RECORD_DIFF_OUTPUTS") == "1")
            File.WriteAllLines(Recorded, actual);

        var expected = File.ReadAllLines(Recorded);
        var differing = actual.Except(expected, StringComparer.Ordinal).ToList();
        Assert.True(differing.Count == 0 && actual.Count == expected.Length,
            $"the differ's verdict changed for {differing.Count} pair(s) (re-record with " +
            $"KINTSUGI_RECORD_DIFF_OUTPUTS=1 if the change is intended):\n{string.Join('\n', differing)}");
    }

    private static string Fingerprint(string pair)
    {
        var result = DiffPairs.Diff(pair).Result;
        var output = result.Output is { } elf ? Convert.ToHexStringLower(SHA256.HashData(elf.ToArray()))[..16] : "none";
        var functions = result.Functions.Where(f => f.Kind != FunctionChange.Unchanged || f.Note is not null)
            .Select(f => $"{f.Kind}:{f.Name}{(f.Note is null ? "" : "*")}");
        var data = result.Data.Select(d => $"{d.Kind}:{d.Name}");
        var refusals = result.Refusals.Select(r => $"{r.Rule}:{r.Symbol}");
        var references = result.References.Select(r => $"{r.OutputName}>{r.TargetName}x{r.Sites.Count}");
        return $"{pair} output={output} functions=[{string.Join(' ', functions)}] data=[{string.Join(' ', data)}] " +
            $"refusals=[{string.Join(' ', refusals)}] references=[{string.Join(' ', references)}] " +
            $"callbacks=[{string.Join(' ', result.Callbacks)}]";
    }
}
