using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Kintsugi.Elf;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Kintsugi.Kernel.Build.Livepatch;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Diff.Tests.Kernel;

/// <summary>
/// The livepatch module the builder makes of the fix corpus (tests/fixtures/fixes: every fix that builds, in one
/// build) on each Debian 12 kernel line is recorded, section by section and symbol by symbol, in
/// tests/fixtures/fixes/outputs.txt. A refactoring of the builder or the differ leaves every line identical; a change
/// of behaviour re-records them (KINTSUGI_RECORD_FIX_OUTPUTS=1) so that the review sees which sections and symbols
/// changed. The fixes that are refused or build nothing are the corpus specification's (Kintsugi.Kernel.Build.Tests).
/// <para>
/// Left out, since they name the build rather than the patch: the build-id note (a hash of the rest), the debug
/// sections and the BTF made from them (they describe the generated module source and hold the build directory's
/// path; 6.12's BTF differs from one build to the next) and, in the embedded manifest, the build time and the
/// builder's version. The prepared trees and pristine objects are the ones every kernel build shares
/// (<c>$KINTSUGI_CACHE/kernels</c>); what this adds is one compile of the fixed units and one link per kernel line.
/// </para>
/// </summary>
public class FixCorpusOutputSpecification
{
    public static TheoryData<string> Lines => [TestKernels.Debian12Cloud61.Value, TestKernels.Debian12Cloud612.Value];

    private static string Root => Path.Combine(Repository.Root, "tests", "fixtures", "fixes");
    private static string Recorded => Path.Combine(Root, "outputs.txt");

    [Theory]
    [MemberData(nameof(Lines))]
    public async Task The_fix_corpus_builds_the_recorded_modules(string line)
    {
        var release = KernelRelease.Parse(line);
        var actual = await FingerprintAsync(release);
        if (Environment.GetEnvironmentVariable("KINTSUGI_RECORD_FIX_OUTPUTS") == "1") Record(release, actual);

        var expected = File.Exists(Recorded)
            ? File.ReadAllLines(Recorded).Where(l => l.StartsWith(release.Value + " ", StringComparison.Ordinal))
                .ToList()
            : [];
        var missing = Without(expected, actual);
        var unexpected = Without(actual, expected);
        Assert.True(missing.Count == 0 && unexpected.Count == 0,
            $"the fix corpus's output changed on {release} (re-record with KINTSUGI_RECORD_FIX_OUTPUTS=1 if the " +
            $"change is intended):\nrecorded, not built now:\n  {string.Join("\n  ", missing)}\n" +
            $"built now, not recorded:\n  {string.Join("\n  ", unexpected)}");
    }

    /// <summary>The lines of <paramref name="lines"/> not matched one for one in <paramref name="other"/>.</summary>
    private static List<string> Without(List<string> lines, List<string> other)
    {
        var left = new List<string>(lines);
        foreach (var line in other) left.Remove(line);
        return left;
    }

    /// <summary>Every fix that builds, built as one livepatch for the kernel, and its module's fingerprint.</summary>
    private static async Task<List<string>> FingerprintAsync(KernelRelease release)
    {
        var patches = BuildableFixes().Select(fix => PatchFor(fix, release)).ToList();
        using var directory = new TemporaryDirectory();
        var result = await Builder().BuildAsync(new KernelBuildRequest(new TargetReference.Debian(release), patches,
            "corpus", [], null, Path.Combine(directory.Path, "out")));
        Assert.Equal(BuildOutcome.Built, result.Outcome);
        return [.. ModuleFingerprint(release.Value, result.Module!)];
    }

    private static KernelPatchBuilder Builder()
    {
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        return new KernelPatchBuilder(archive,
            () => new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { }),
            _ => { });
    }

    /// <summary>The fixes whose <c>expect</c> file says <c>outcome: builds</c>, by name.</summary>
    private static IEnumerable<string> BuildableFixes() =>
        Directory.GetDirectories(Root).Order(StringComparer.Ordinal)
            .Where(d => File.ReadAllLines(Path.Combine(d, "expect")).Select(l => l.Split('#')[0].Split(':', 2))
                .Any(p => p.Length == 2 && p[0].Trim() == "outcome" && p[1].Trim() == "builds"))
            .Select(d => Path.GetFileName(d)!);

    /// <summary><c>fix-MAJOR.MINOR.patch</c> where the line needs its own text, else <c>fix.patch</c>.</summary>
    private static string PatchFor(string fix, KernelRelease release)
    {
        var parts = release.Value.Split('.', '-', '+');
        var variant = Path.Combine(Root, fix, $"fix-{parts[0]}.{parts[1]}.patch");
        return File.Exists(variant) ? variant : Path.Combine(Root, fix, "fix.patch");
    }

    /// <summary>
    /// One line per section and per symbol of a module, by name rather than by index, so that a change in one unit
    /// shows in that unit's sections and symbols (and the module-wide ones) and does not renumber every other line.
    /// Relocations are listed by offset, type, symbol name and addend.
    /// </summary>
    private static IEnumerable<string> ModuleFingerprint(string label, string module)
    {
        var elf = ElfObject.Load(module);
        foreach (var section in elf.Sections)
        {
            var name = section.Name;
            if (name.Length == 0 || name is ".note.gnu.build-id" or ".symtab" or ".strtab" or ".shstrtab"
                || name.StartsWith(".debug", StringComparison.Ordinal)
                || name.StartsWith(".BTF", StringComparison.Ordinal)
                || name.StartsWith(".rela.debug", StringComparison.Ordinal))
                continue;
            var content = section switch
            {
                ElfRelocationSection relocations => Encoding.UTF8.GetBytes(string.Join('\n',
                    relocations.Relocations.OrderBy(r => r.Offset).Select(r =>
                        $"{r.Offset} {(int)r.Type} {SymbolName(r.Symbol)} {r.Addend}"))),
                ElfDataSection data when name == LivepatchModuleBuilder.ManifestSection => Manifest(data.Data),
                ElfDataSection data => data.Data.ToArray(),
                _ => [],
            };
            var target = section is ElfRelocationSection { Target: { } applied } ? $" target={applied.Name}" : "";
            // The manifest's size follows its build time's text (trailing zeros of the fraction are left out).
            var size = name == LivepatchModuleBuilder.ManifestSection ? "" : $" size={section.Size}";
            yield return $"{label} section {name} type={(int)section.Type} flags={(ulong)section.Flags:x} " +
                $"align={section.Alignment}{size}{target} " +
                $"sha256={Convert.ToHexStringLower(SHA256.HashData(content))[..16]}";
        }
        foreach (var symbol in elf.SymbolTable!.Symbols.Where(s => s.Type != ElfSymbolType.Section))
            yield return $"{label} symbol {symbol.Name} {symbol.Type} {symbol.Binding} {symbol.Visibility} " +
                $"{SymbolPlace(symbol)} value={symbol.Value} size={symbol.Size}";
    }

    private static string SymbolName(ElfSymbol? symbol) =>
        symbol is null ? "-" : symbol.Type == ElfSymbolType.Section ? "section:" + symbol.Section?.Name : symbol.Name;

    private static string SymbolPlace(ElfSymbol symbol) =>
        symbol.Section?.Name
        ?? (symbol.IsUndefined ? "UND" : symbol.IsAbsolute ? "ABS" : symbol.IsCommon ? "COM" : "?");

    /// <summary>The embedded manifest without what names the build (its time, the builder) or is unset.</summary>
    private static byte[] Manifest(ReadOnlyMemory<byte> bytes)
    {
        var manifest = JsonNode.Parse(bytes.Span)!.AsObject();
        manifest.Remove("builtAt");
        manifest.Remove("builder");
        foreach (var unset in manifest.Where(p => p.Value is null).Select(p => p.Key).ToList()) manifest.Remove(unset);
        return Encoding.UTF8.GetBytes(manifest.ToJsonString());
    }

    /// <summary>Replaces this kernel line's recorded lines, keeping the other lines'.</summary>
    private static void Record(KernelRelease release, List<string> lines)
    {
        var others = File.Exists(Recorded)
            ? File.ReadAllLines(Recorded).Where(l => !l.StartsWith(release.Value + " ", StringComparison.Ordinal))
            : [];
        File.WriteAllLines(Recorded, [.. others.Concat(lines).OrderBy(l => l.Split(' ')[0], StringComparer.Ordinal)]);
    }
}
