using Kintsugi.Elf;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>How a symbol of the running kernel was identified; recorded in the manifest for every one.</summary>
public enum ResolutionMethod
{
    /// <summary>The only symbol of that name in its object.</summary>
    UniqueName,
    /// <summary>Of several same-named functions, the one whose shipped code equals the compiled original.</summary>
    MatchingCode,
    /// <summary>Of several same-named symbols, the one whose neighbours in the shipped object sit where the compiled
    /// original puts its own.</summary>
    SectionLayout,
}

public sealed record ResolvedSymbol(string Object, string Name, Sympos Sympos, ulong Address, ResolutionMethod Method);

/// <summary>How the unit a resolver compares with the shipped object was compiled.</summary>
public enum UnitCompile
{
    /// <summary>With the distribution's own flags (the original): its code and its layout are the shipped
    /// object's.</summary>
    AsDistributed,
    /// <summary>
    /// With one section per function and per datum (the differ's before side). A function's code is the shipped code
    /// outside relocation sites (calls between the unit's functions become such sites), except that now and then a
    /// short jump becomes a long one (1 function in 1,693 measured), and the unit's layout is gone. So a function that
    /// does not match, or a choice between same-named symbols that only the layout makes, asks for the original
    /// (<see cref="OriginalCompileNeededException"/>) rather than giving an answer.
    /// </summary>
    SectionPerFunction,
}

/// <summary>
/// The resolver was given a unit compiled with one section per function and cannot decide without the unit compiled
/// as the distribution did. Not a failure: the resolve phase compiles the original and resolves again.
/// </summary>
public sealed class OriginalCompileNeededException(string reason) : Exception(reason);

/// <summary>
/// Finds, for symbols of one translation unit, the very symbol of the running kernel they are, using the
/// unit compiled (see <see cref="UnitCompile"/>) and the shipped object. No debug package is needed: same-named
/// locals are told apart by their code or by the layout of their neighbours.
/// </summary>
public sealed class SymbolResolver
{
    private readonly ShippedObject _shipped;
    private readonly ElfObject _original;
    private readonly UnitCompile _compile;
    private readonly Dictionary<string, CompiledFunction> _functions;

    /// <param name="original">The unit compiled as <paramref name="compile"/> says; an empty object resolves by
    /// name alone.</param>
    public SymbolResolver(ShippedObject shipped, ElfObject original, UnitCompile compile = UnitCompile.AsDistributed)
    {
        _shipped = shipped;
        _original = original;
        _compile = compile;
        _functions = CompiledFunction.ReadAll(original).GroupBy(f => f.Name).ToDictionary(g => g.Key, g => g.First(),
            StringComparer.Ordinal);
    }

    public string ObjectName => _shipped.Name;

    /// <summary>
    /// The shipped function that is this unit's <paramref name="name"/>, proven by equal code outside
    /// relocation sites. Null when no shipped function of that name has this code: the build does not
    /// reproduce the running kernel (the fidelity proof failed) or the function is not in this object.
    /// </summary>
    public ResolvedSymbol? ResolveFunction(string name, out string? mismatch)
    {
        mismatch = null;
        if (!_functions.TryGetValue(name, out var compiled))
        {
            mismatch = $"{name} is not a function of the compiled original";
            return null;
        }
        var candidates = _shipped.Symbols.Named(name).Where(s => s.IsFunction).ToList();
        if (candidates.Count == 0)
        {
            mismatch = $"{_shipped.Name} has no function {name} (not built into this kernel, or inlined everywhere)";
            return null;
        }
        var matching = candidates.Where(c =>
            _shipped.Read(c, compiled.Code.Length) is { } bytes && compiled.Matches(bytes.Span)).ToList();
        if (matching.Count == 0)
        {
            NeedOriginal($"{name} compiled with one section per function differs from the shipped code");
            var first = candidates[0];
            var offset = _shipped.Read(first, compiled.Code.Length) is { } bytes ? compiled.FirstDifference(bytes.Span)
                : 0;
            mismatch = $"{name}: the compiled original differs from the shipped code of {_shipped.Name} (first at " +
                $"byte {offset} of {compiled.Code.Length}; {candidates.Count} candidate(s))";
            return null;
        }
        if (matching.Count == 1)
            return Resolved(name, matching[0],
                candidates.Count == 1 ? ResolutionMethod.UniqueName : ResolutionMethod.MatchingCode);
        NeedOriginal($"{matching.Count} functions named {name} have its code; their layout tells them apart");
        return ByLayout(name, compiled.SectionName, compiled.Offset, matching)
            ?? throw new SymbolResolutionException($"{matching.Count} functions named {name} in {_shipped.Name} have " +
            $"the same code and no neighbour tells them apart; fetch the kernel's debug package or patch a caller " +
            $"instead");
    }

    /// <summary>Any symbol this unit references: a function by its code, data by the layout around it.</summary>
    public ResolvedSymbol Resolve(string name)
    {
        var candidates = _shipped.Symbols.Named(name);
        if (candidates.Count == 1) return Resolved(name, candidates[0], ResolutionMethod.UniqueName);
        if (candidates.Count == 0)
            throw new SymbolResolutionException($"{_shipped.Name} has no symbol {name}; the patched code references " +
                $"something the running kernel does not have");
        if (_functions.ContainsKey(name))
            return ResolveFunction(name, out var mismatch) ?? throw new SymbolResolutionException(mismatch!);
        NeedOriginal($"{name} occurs {candidates.Count} times; the unit's layout tells which one is its own");
        var symbol = _original.SymbolTable?.Symbols.FirstOrDefault(s => s.Name == name && s.Section is not null)
            ?? throw new SymbolResolutionException($"{name} occurs {candidates.Count} times in {_shipped.Name} and " +
            $"is not defined in this unit, so nothing tells which one is meant");
        return ByLayout(name, symbol.Section!.Name, symbol.Value, candidates)
            ?? throw new SymbolResolutionException($"{name} occurs {candidates.Count} times in {_shipped.Name} and " +
            $"its neighbours do not tell which one is this unit's; fetch the kernel's debug package");
    }

    private void NeedOriginal(string reason)
    {
        if (_compile == UnitCompile.SectionPerFunction) throw new OriginalCompileNeededException(reason);
    }

    private ResolvedSymbol? ByLayout(string name, string sectionName, ulong offset,
        IReadOnlyList<KernelSymbol> candidates)
    {
        var neighbours = (_original.SymbolTable?.Symbols ?? Enumerable.Empty<ElfSymbol>()).Where(s =>
            s.Section?.Name == sectionName && s.Name.Length > 0 && s.Name != name
            && s.Type is ElfSymbolType.Function or ElfSymbolType.Object).ToList();
        var scored = candidates.Select(c =>
        {
            var unitBase = c.Address - offset;
            var score = neighbours.Count(n => _shipped.Symbols.Named(n.Name).Any(k => k.Address == unitBase + n.Value));
            return (Candidate: c, Score: score);
        }).OrderByDescending(x => x.Score).ToList();
        if (scored.Count == 0 || scored[0].Score == 0 || (scored.Count > 1 && scored[1].Score == scored[0].Score))
            return null;
        return Resolved(name, scored[0].Candidate, ResolutionMethod.SectionLayout);
    }

    private ResolvedSymbol Resolved(string name, KernelSymbol symbol, ResolutionMethod method) =>
        new(_shipped.Name, name, _shipped.Symbols.SymposOf(name, symbol.Address), symbol.Address, method);
}
