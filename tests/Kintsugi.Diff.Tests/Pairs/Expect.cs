using System.Text;
using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>Assertions the pair specifications share.</summary>
internal static class Expect
{
    /// <summary>
    /// The output holds the new code of <paramref name="function"/> under its tagged global name, and nothing under its
    /// own name.
    /// </summary>
    public static void ChangedAndIncluded(PairDiff d, string function)
    {
        var diff = d.Function(function);
        Assert.Equal(FunctionChange.Changed, diff.Kind);
        Assert.Equal(DiffPairs.Tag + ObjectDiffer.Sanitize(function), diff.OutputSymbol);
        var symbol = Assert.Contains(diff.OutputSymbol!, d.Defined);
        Assert.Equal(ElfSymbolType.Function, symbol.Type);
        Assert.Equal(ElfSymbolBinding.Global, symbol.Binding);
        Assert.True(symbol.Size > 0);
        Assert.DoesNotContain(function, d.Defined.Keys);
    }

    /// <summary>Neither the function nor a tagged copy of it is in the output.</summary>
    public static void Absent(PairDiff d, string function)
    {
        Assert.DoesNotContain(function, d.Defined.Keys);
        Assert.DoesNotContain(DiffPairs.Tag + ObjectDiffer.Sanitize(function), d.Defined.Keys);
    }

    public static void Unchanged(PairDiff d, params string[] functions)
    {
        foreach (var function in functions) Assert.Equal(FunctionChange.Unchanged, d.Kind(function));
    }

    /// <summary>
    /// A function of the unit the output calls in the running kernel: an undefined symbol and its load-time reference.
    /// </summary>
    public static LoadTimeReference ReferenceToUnit(PairDiff d, string target, bool isLocal, ReferenceTargetKind kind)
    {
        var outputName = isLocal ? DiffPairs.Tag + "local_" + ObjectDiffer.Sanitize(target) : target;
        var reference = d.Reference(outputName);
        Assert.Equal(target, reference.TargetName);
        Assert.Equal(isLocal, reference.IsLocal);
        Assert.True(reference.DefinedInUnit);
        Assert.Equal(kind, reference.Kind);
        Assert.NotEmpty(reference.Sites);
        Assert.Contains(outputName, d.Undefined);
        Assert.DoesNotContain(target, d.Defined.Keys);
        return reference;
    }

    /// <summary>A symbol the unit does not define: a global reference by its own name.</summary>
    public static LoadTimeReference ExternalReference(PairDiff d, string name)
    {
        var reference = d.Reference(name);
        Assert.Equal(name, reference.TargetName);
        Assert.False(reference.IsLocal);
        Assert.False(reference.DefinedInUnit);
        Assert.NotEmpty(reference.Sites);
        Assert.Contains(name, d.Undefined);
        return reference;
    }

    /// <summary>
    /// Refused under <paramref name="rule"/> naming <paramref name="symbol"/>, with a message that names it and says
    /// what to do instead.
    /// </summary>
    public static DiffRefusal Refused(PairDiff d, RefusalRule rule, string symbol, params string[] advice)
    {
        var refusal = d.Refusal(rule);
        Assert.Equal(symbol, refusal.Symbol);
        Assert.Contains(symbol, refusal.Message, StringComparison.Ordinal);
        foreach (var words in advice) Assert.Contains(words, refusal.Message, StringComparison.Ordinal);
        Assert.True(d.Result.IsRefused);
        Assert.Null(d.Result.Output);
        Assert.Empty(d.Result.References);
        return refusal;
    }

    /// <summary>The NUL-terminated strings of the output's sections named <paramref name="section"/>.</summary>
    public static IReadOnlyList<string> Strings(PairDiff d, Func<string, bool> section) =>
        [.. d.Output.Sections.Where(s => section(s.Name)).OfType<ElfDataSection>()
            .SelectMany(s => Encoding.Latin1.GetString(s.Data).Split('\0', StringSplitOptions.RemoveEmptyEntries))];
}
