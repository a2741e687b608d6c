using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>What became of one changed file.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<FileOutcome>))]
public enum FileOutcome
{
    /// <summary>Its changed functions are in the module.</summary>
    Built,
    /// <summary>It cannot be live patched; the rule, reason and advice say why and what to do.</summary>
    Refused,
    /// <summary>It changes no machine code of this kernel (comments, declarations, code the configuration leaves
    /// out).</summary>
    NoCode,
    /// <summary>This kernel's configuration does not build it; the proof says how that was decided.</summary>
    NotBuilt,
    /// <summary>Not code of the running kernel (documentation, tools, samples, other architectures'
    /// directories).</summary>
    NotKernelCode,
}

/// <param name="Companions">Changed headers whose additions a built fix needs; the module applies them with it.</param>
/// <param name="BuiltWith">Changed C files a built fix needs in the same livepatch: they add functions its code
/// calls, which the running kernel lacks.</param>
public sealed record FileReport(string Path, string Change, FileOutcome Outcome, IReadOnlyList<string> Functions,
    IReadOnlyList<string> Cves,
    string? Object, string? Rule, string? Reason, string? Advice, string? Proof, string? Patch,
    IReadOnlyList<string>? Companions = null, IReadOnlyList<string>? BuiltWith = null);

[JsonConverter(typeof(JsonStringEnumConverter<CveStatus>))]
public enum CveStatus
{
    /// <summary>Every changed file it maps to is built into the module (or is proven to need nothing on this
    /// kernel).</summary>
    Covered,
    /// <summary>A file it maps to was refused: only a reboot into the new version closes it.</summary>
    NeedsReboot,
    /// <summary>None of the files it maps to is built into this kernel, with proof.</summary>
    NotAffected,
    /// <summary>Its subject matched no changed file: whether the module closes it is unknown, so it needs a
    /// reboot.</summary>
    Unmapped,
}

public sealed record CveReport(string Id, CveStatus Status, MatchConfidence? Confidence, IReadOnlyList<string> Subjects,
    IReadOnlyList<CveFileMatch> Files, string Explanation);

public sealed record CatchUpTotals(int ChangedFiles, int Built, int Refused, int NoCode, int NotBuilt,
    int NotKernelCode, int Cves, int Covered, int NeedsReboot, int NotAffected, int Unmapped);

/// <summary>The report a security team reads: which CVEs the module closes on the running kernel and which still need a
/// reboot.</summary>
public sealed record CatchUpReport(
    string Release, string? PackageVersion, string BuildId, string From, string To, string? Module, int? Level,
    IReadOnlyList<string> Versions, CatchUpTotals Totals, IReadOnlyList<FileReport> Files,
    IReadOnlyList<CveReport> Cves, IReadOnlyList<Build.StageTiming> Stages, DateTimeOffset Created)
{
    public byte[] ToUtf8() => JsonSerializer.SerializeToUtf8Bytes(this, CatchUpJson.Default.CatchUpReport);

    public static CatchUpReport Read(string path) =>
        JsonSerializer.Deserialize(File.ReadAllBytes(path), CatchUpJson.Default.CatchUpReport)
        ?? throw new CatchUpException($"{path} is empty");

    /// <summary>The human-readable report: CVEs first (what the reader came for), then every file by outcome.</summary>
    public string ToText()
    {
        var text = new StringBuilder();
        text.AppendLine($"Catch-up of {Release} ({PackageVersion}, build-id {BuildId}) from {From} to {To}");
        text.AppendLine(Module is null ? "No module was built." : $"Module: {Module} (level {Level})");
        text.AppendLine($"Changelog versions: {string.Join(", ", Versions)}");
        text.AppendLine();
        text.AppendLine($"CVEs: {Totals.Cves}: {Totals.Covered} covered by the livepatch, {Totals.NotAffected} not " +
            $"affecting this kernel, " +
            $"{Totals.NeedsReboot + Totals.Unmapped} still need a reboot ({Totals.NeedsReboot} refused, " +
            $"{Totals.Unmapped} not matched to a change)");
        foreach (var group in Cves.GroupBy(c => c.Status).OrderBy(g => g.Key))
        {
            text.AppendLine();
            text.AppendLine(group.Key switch
            {
                CveStatus.Covered => "Covered by the livepatch:",
                CveStatus.NotAffected => "Not affecting this kernel (the fixed code is not built into it):",
                CveStatus.NeedsReboot => "Still need a reboot (a file of the fix was refused):",
                _ => "Still need a reboot (the fix could not be matched to a changed file):",
            });
            foreach (var cve in group)
            {
                text.AppendLine($"  {cve.Id}" + (cve.Confidence is { } c ? $" [match {c.ToString().ToLowerInvariant()}]"
                    : "") + $": {string.Join(" / ", cve.Subjects)}");
                foreach (var file in cve.Files)
                    text.AppendLine($"      {file.Path} ({file.How}, {file.Confidence.ToString().ToLowerInvariant()})");
                if (cve.Status != CveStatus.Covered) text.AppendLine($"      {cve.Explanation}");
            }
        }
        text.AppendLine();
        text.AppendLine($"Changed files: {Totals.ChangedFiles}: {Totals.Built} built, {Totals.Refused} refused, " +
            $"{Totals.NoCode} change no code, " +
            $"{Totals.NotBuilt} not built in this kernel, {Totals.NotKernelCode} not kernel code");
        foreach (var group in Files.GroupBy(f => f.Outcome).OrderBy(g => g.Key))
        {
            if (group.Key == FileOutcome.NotKernelCode) continue;
            text.AppendLine();
            text.AppendLine(group.Key switch
            {
                FileOutcome.Built => "Built:",
                FileOutcome.Refused => "Refused:",
                FileOutcome.NoCode => "Change no code of this kernel:",
                _ => "Not built in this kernel:",
            });
            foreach (var file in group)
            {
                var cves = file.Cves.Count > 0 ? $" ({string.Join(", ", file.Cves)})" : "";
                text.AppendLine($"  {file.Path}{cves}");
                if (file.Outcome == FileOutcome.Built)
                    text.AppendLine($"      {file.Object}: {string.Join(", ", file.Functions)}");
                if (file.Companions is { Count: > 0 } companions)
                    text.AppendLine($"      with the additions of {string.Join(", ", companions)}");
                if (file.BuiltWith is { Count: > 0 } with)
                    text.AppendLine($"      together with {string.Join(", ", with)}, which add(s) what it calls");
                if (file.Rule is not null) text.AppendLine($"      rule: {file.Rule}");
                if (file.Reason is not null) text.AppendLine("      " + file.Reason.Replace("\n", "\n      "));
                if (file.Advice is not null) text.AppendLine($"      what to do: {file.Advice}");
                if (file.Proof is not null) text.AppendLine($"      proof: {file.Proof}");
            }
        }
        text.AppendLine();
        text.AppendLine("Stages: " + string.Join(", ", Stages.Select(s => $"{s.Stage} {s.Seconds:0.0} s")));
        return text.ToString();
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UseStringEnumConverter = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(CatchUpReport))]
[JsonSerializable(typeof(CachedDifference))]
[JsonSerializable(typeof(FileTrial))]
[JsonSerializable(typeof(KeptPlan))]
internal sealed partial class CatchUpJson : JsonSerializerContext;

/// <summary>A catch-up cannot proceed: the versions, the changelog or the inputs are wrong.</summary>
public sealed class CatchUpException(string message, ExitCode exitCode = ExitCode.InputRefused, Exception? inner = null)
    : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = exitCode;
}
