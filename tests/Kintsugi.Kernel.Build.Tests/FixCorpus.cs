using Kintsugi.Kernel.Archive;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

public enum FixOutcome { Builds, NothingToDo, Refused }

/// <summary>
/// One fix of the corpus (tests/fixtures/fixes/NAME): the patch (or a per-line variant), the guest check that
/// tells the fixed behaviour apart, and what the builder must do with it (the <c>expect</c> file).
/// </summary>
public sealed record CorpusFix(string Name, string Directory, FixOutcome Outcome, int Level, string? Rule,
    string? Module, string? Mentions)
{
    public static string Root => Path.Combine(Repository.Root, "tests", "fixtures", "fixes");

    public static IReadOnlyList<CorpusFix> All { get; } = Load();

    public static CorpusFix Named(string name) => All.Single(f => f.Name == name);

    public string Check => Path.Combine(Directory, "check.sh");

    /// <summary><c>fix-MAJOR.MINOR.patch</c> when the fix needs a variant for that kernel line, else
    /// <c>fix.patch</c>.</summary>
    public string PatchFor(KernelRelease release)
    {
        var parts = release.Value.Split('.', '-', '+');
        var variant = Path.Combine(Directory, $"fix-{parts[0]}.{parts[1]}.patch");
        return File.Exists(variant) ? variant : Path.Combine(Directory, "fix.patch");
    }

    private static List<CorpusFix> Load()
    {
        var fixes = new List<CorpusFix>();
        foreach (var directory in System.IO.Directory.GetDirectories(Root).Order(StringComparer.Ordinal))
        {
            var fields = File.ReadAllLines(Path.Combine(directory, "expect"))
                .Select(l => l.Split('#')[0].Trim()).Where(l => l.Length > 0)
                .Select(l => l.Split(':', 2)).ToDictionary(p => p[0].Trim(), p => p[1].Trim(), StringComparer.Ordinal);
            var outcome = fields["outcome"] switch
            {
                "builds" => FixOutcome.Builds,
                "nothing-to-do" => FixOutcome.NothingToDo,
                "refused" => FixOutcome.Refused,
                var other => throw new InvalidOperationException($"{directory}/expect: unknown outcome '{other}'"),
            };
            var fix = new CorpusFix(Path.GetFileName(directory), directory, outcome,
                fields.TryGetValue("level", out var level) ? int.Parse(level) : 0,
                fields.GetValueOrDefault("rule"), fields.GetValueOrDefault("module"),
                fields.GetValueOrDefault("mentions"));
            if (outcome == FixOutcome.Builds && (fix.Level is not (1 or 2) || !File.Exists(fix.Check)))
                throw new InvalidOperationException(
                    $"{directory}: a fix that builds needs 'level: 1' or 'level: 2' and a check.sh");
            if (outcome == FixOutcome.Refused && fix.Rule is null)
                throw new InvalidOperationException($"{directory}: a refused fix names the rule it is refused by");
            fixes.Add(fix);
        }
        return fixes;
    }

    public override string ToString() => Name;
}
