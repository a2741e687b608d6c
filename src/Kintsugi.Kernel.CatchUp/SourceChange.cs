using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>How a construct differs between the two versions of a file.</summary>
public enum ConstructChange { Added, Removed, Changed }

public sealed record ChangedConstruct(CDeclarationKind Kind, string Name, ConstructChange Change)
{
    public override string ToString() => $"{Describe(Kind)} {Name} ({Change.ToString().ToLowerInvariant()})";

    internal static string Describe(CDeclarationKind kind) => kind switch
    {
        CDeclarationKind.Macro => "macro",
        CDeclarationKind.Include => "#include",
        CDeclarationKind.Conditional => "conditional",
        CDeclarationKind.Function => "function",
        CDeclarationKind.InlineFunction => "inline function",
        CDeclarationKind.Aggregate => "",
        CDeclarationKind.Enum => "",
        CDeclarationKind.Typedef => "typedef",
        CDeclarationKind.Declaration => "declaration",
        CDeclarationKind.Variable => "variable",
        _ => "construct",
    };
}

/// <summary>What a changed header means for the units that include it.</summary>
public enum HeaderImpact
{
    /// <summary>Only comments or whitespace changed.</summary>
    NoCode,
    /// <summary>Only declarations were added: no existing unit compiles differently.</summary>
    DeclarationsOnly,
    /// <summary>Macros, inline functions or includes changed: every built unit including it is rebuilt.</summary>
    Code,
    /// <summary>A structure's layout, a non-inline definition, a signature or the conditionals changed: dependents are
    /// refused.</summary>
    Refused,
}

/// <param name="AddedMacros">Macros the header defines now and did not before. They compile to nothing unless a
/// source of the running kernel already names them (an #ifdef, a fallback definition):
/// <see cref="SourceChange.WithNamedMacros"/> decides that from the tree.</param>
public sealed record HeaderVerdict(HeaderImpact Impact, IReadOnlyList<ChangedConstruct> Constructs,
    IReadOnlyList<string> Reasons, IReadOnlyList<string> AddedMacros)
{
    public HeaderVerdict(HeaderImpact impact, IReadOnlyList<ChangedConstruct> constructs, IReadOnlyList<string> reasons)
        : this(impact, constructs, reasons, []) { }
}

/// <summary>
/// Compares the two versions of one source file construct by construct. For a C file it names the functions
/// that changed (what a CVE subject is matched against); for a header it decides whether the change can be
/// carried by rebuilding its includers (macros, inline functions) or must refuse them (layouts, non-inline
/// definitions, signatures). When unsure, a header is refused with the reason: never silently dropped.
/// </summary>
public static partial class SourceChange
{
    public static IReadOnlyList<ChangedConstruct> Compare(string? before, string? after)
    {
        var old = Index(before is null ? [] : CDeclarations.Parse(before));
        var @new = Index(after is null ? [] : CDeclarations.Parse(after));
        var changes = new List<ChangedConstruct>();
        foreach (var (key, declaration) in @new)
        {
            if (!old.TryGetValue(key, out var previous))
                changes.Add(new(declaration.Kind, declaration.Name, ConstructChange.Added));
            else if (previous.Text != declaration.Text)
                changes.Add(new(declaration.Kind, declaration.Name, ConstructChange.Changed));
        }
        foreach (var (key, declaration) in old)
            if (!@new.ContainsKey(key)) changes.Add(new(declaration.Kind, declaration.Name, ConstructChange.Removed));
        return changes;
    }

    /// <summary>Whether the two versions are the same code once comments and spacing are ignored (tokens in the same
    /// order).</summary>
    public static bool SameCode(string? before, string? after) =>
        before is not null && after is not null && Tokens(before) == Tokens(after);

    private static string Tokens(string source) => Spacing().Replace(CDeclarations.StripComments(source), " ").Trim();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spacing();

    /// <summary>The functions (inline or not) whose text differs, was added or removed.</summary>
    public static IReadOnlyList<string> ChangedFunctions(IReadOnlyList<ChangedConstruct> changes) =>
        [.. changes.Where(c => c.Kind is CDeclarationKind.Function or CDeclarationKind.InlineFunction)
            .Select(c => c.Name).Distinct().Order(StringComparer.Ordinal)];

    public static HeaderVerdict ClassifyHeader(string? before, string? after)
    {
        var changes = Compare(before, after);
        // Conditionals are compared as one sequence: their keys repeat (#endif), and an added or moved one changes what
        // compiles.
        var conditionalsBefore = Conditionals(before);
        var conditionalsAfter = Conditionals(after);
        var reasons = new List<string>();
        var code = false;
        var declarations = false;
        var addedMacros = new List<string>();
        if (!conditionalsBefore.SequenceEqual(conditionalsAfter))
            reasons.Add("changes preprocessor conditionals (#if/#ifdef/#else/#endif), so which definitions compile " +
                "may change: cannot tell what depends on it");
        foreach (var change in changes.Where(c => c.Kind != CDeclarationKind.Conditional))
        {
            switch (change.Kind, change.Change)
            {
                case (CDeclarationKind.Macro, ConstructChange.Added):
                    // A name the old sources never mention cannot change what they compile (new device ids, flags).
                    addedMacros.Add(change.Name);
                    declarations = true;
                    break;
                case (CDeclarationKind.Macro, _) when IsConstantMacro(before, after, change.Name):
                    reasons.Add($"changes the constant macro {change.Name}, which may size a structure or an array: " +
                        $"layouts of the running kernel cannot change");
                    break;
                case (CDeclarationKind.Macro or CDeclarationKind.InlineFunction or CDeclarationKind.Include, _):
                    code = true;
                    break;
                case (CDeclarationKind.Aggregate, ConstructChange.Added)
                or (CDeclarationKind.Typedef, ConstructChange.Added)
                    or (CDeclarationKind.Enum, ConstructChange.Added)
                or (CDeclarationKind.Declaration, ConstructChange.Added or ConstructChange.Removed):
                    declarations = true;
                    break;
                case (CDeclarationKind.Aggregate, _):
                    reasons.Add($"changes the layout of {change.Name} " +
                        $"({change.Change.ToString().ToLowerInvariant()}): data of the running kernel keeps the old " +
                        $"layout");
                    break;
                case (CDeclarationKind.Enum, ConstructChange.Changed) when EnumOnlyAppended(before, after, change.Name):
                    code = true;
                    break;
                case (CDeclarationKind.Enum, _):
                    reasons.Add(
                        $"renumbers {change.Name}: values the running kernel already stores would change meaning");
                    break;
                case (CDeclarationKind.Typedef, _):
                    reasons.Add($"changes typedef {change.Name}: a type of the running kernel cannot change");
                    break;
                case (CDeclarationKind.Declaration, _):
                    reasons.Add($"changes the declaration of {change.Name}: callers compiled against the old " +
                        $"signature would call it wrongly");
                    break;
                case (CDeclarationKind.Function, _):
                    reasons.Add($"changes {change.Name}, a non-inline definition in a header: every includer has its " +
                        $"own copy, and which ones are live cannot be told here");
                    break;
                case (CDeclarationKind.Variable, ConstructChange.Added):
                    code = true;
                    break;
                case (CDeclarationKind.Variable, _):
                    reasons.Add($"changes the definition of {change.Name}: data of the running kernel cannot change " +
                        $"by a livepatch");
                    break;
                default:
                    reasons.Add($"changes '{Shorten(change.Name)}', which this tool cannot classify: refused rather " +
                        $"than guessed");
                    break;
            }
        }
        if (SameCode(before, after)) return new HeaderVerdict(HeaderImpact.NoCode, [], []);
        var impact = reasons.Count > 0 ? HeaderImpact.Refused
            : code ? HeaderImpact.Code : declarations ? HeaderImpact.DeclarationsOnly : HeaderImpact.Code;
        return new HeaderVerdict(impact, changes, reasons, addedMacros);
    }

    /// <summary>
    /// The verdict once the running kernel's sources are known: a macro the header adds that some source already
    /// names (<paramref name="namedIn"/>: name → a file naming it) may turn on an #ifdef or replace a fallback
    /// definition, which can change code and structure layouts alike, so the header is refused.
    /// </summary>
    public static HeaderVerdict WithNamedMacros(HeaderVerdict verdict, IReadOnlyDictionary<string, string> namedIn)
    {
        var reasons = verdict.AddedMacros.Where(namedIn.ContainsKey).Select(macro =>
            $"adds the macro {macro}, which the running kernel's sources already name ({namedIn[macro]}): an #ifdef " +
            "or a fallback definition may compile differently, structure layouts included").ToList();
        return reasons.Count == 0 ? verdict
            : verdict with { Impact = HeaderImpact.Refused, Reasons = [.. verdict.Reasons, .. reasons] };
    }

    /// <summary>
    /// Whether a header's change only adds (new structures, enumerations, typedefs, declarations, macros, inline
    /// functions, or a new header) and removes nothing but declarations, under the same conditionals: a unit that
    /// includes it compiles as before unless its own code uses what was added. A fix that uses the additions is
    /// compiled with them (its companion headers), without rebuilding every other includer.
    /// </summary>
    public static bool OnlyAdds(string? before, string? after)
    {
        if (after is null) return false;
        if (before is null) return true;
        if (!Conditionals(before).SequenceEqual(Conditionals(after))) return false;
        return Compare(before, after).Where(c => c.Kind != CDeclarationKind.Conditional)
            .All(c => (c.Kind, c.Change) switch
        {
            (CDeclarationKind.Aggregate or CDeclarationKind.Enum or CDeclarationKind.Typedef
                or CDeclarationKind.Declaration
                or CDeclarationKind.Macro or CDeclarationKind.InlineFunction, ConstructChange.Added) => true,
            (CDeclarationKind.Declaration, ConstructChange.Removed) => true,
            _ => false,
        });
    }

    /// <summary>Constructs by key; a key that repeats (a function defined under #ifdef and #else) is numbered by
    /// occurrence.</summary>
    private static Dictionary<string, CDeclaration> Index(IReadOnlyList<CDeclaration> declarations)
    {
        var index = new Dictionary<string, CDeclaration>(StringComparer.Ordinal);
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var declaration in declarations)
        {
            var seen = counts.GetValueOrDefault(declaration.Key);
            counts[declaration.Key] = seen + 1;
            index[seen == 0 ? declaration.Key : $"{declaration.Key}#{seen}"] = declaration;
        }
        return index;
    }

    private static List<string> Conditionals(string? source) =>
        source is null ? []
        : [.. CDeclarations.Parse(source).Where(d => d.Kind == CDeclarationKind.Conditional).Select(d => d.Text)];

    /// <summary>A macro whose value, before or after, is only a number or an arithmetic of numbers and other
    /// constants.</summary>
    private static bool IsConstantMacro(string? before, string? after, string name)
    {
        foreach (var source in new[] { before, after })
        {
            if (source is null) continue;
            foreach (var macro in CDeclarations.Parse(source)
                .Where(d => d.Kind == CDeclarationKind.Macro && d.Name == name))
            {
                var match = MacroBody().Match(macro.Text);
                if (!match.Success || match.Groups["params"].Length > 0) continue;
                var tokens = Token().Matches(match.Groups["body"].Value).Select(t => t.Value).ToList();
                if (tokens.Any(t => NumericLiteral().IsMatch(t))
                    && tokens.All(t => NumericLiteral().IsMatch(t) || ConstantName().IsMatch(t)))
                    return true;
            }
        }
        return false;
    }

    private static bool EnumOnlyAppended(string? before, string? after, string name)
    {
        static List<string> Enumerators(string? source, string name) =>
            source is null ? [] : CDeclarations.Parse(source)
            .Where(d => d.Kind == CDeclarationKind.Enum && d.Name == name)
            .Select(d => d.Text[(d.Text.IndexOf('{') + 1)..d.Text.LastIndexOf('}')])
            .SelectMany(body => body.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            .ToList();
        var old = Enumerators(before, name);
        var @new = Enumerators(after, name);
        // Appending after an explicit count marker (FOO_MAX, NR_FOO) moves the marker: that renumbers.
        return @new.Count > old.Count && @new.Take(old.Count).SequenceEqual(old)
            && !old.Any(e => CountMarker().IsMatch(e.Split('=')[0].Trim()));
    }

    private static string Shorten(string text) => text.Length > 80 ? text[..77] + "..." : text;

    [GeneratedRegex(@"^#\s*define\s+[A-Za-z_][A-Za-z0-9_]*(?<params>\([^)]*\))?(?<body>.*)$")]
    private static partial Regex MacroBody();

    [GeneratedRegex(@"[A-Za-z0-9_]+")]
    private static partial Regex Token();

    [GeneratedRegex(@"^(0[xX][0-9a-fA-F]+|\d+)[uUlL]*$")]
    private static partial Regex NumericLiteral();

    [GeneratedRegex(@"^[A-Z_][A-Z0-9_]*$")]
    private static partial Regex ConstantName();

    [GeneratedRegex(@"(^|_)(MAX|NR|NUM|COUNT|LAST)(_|$)|^NR_|^__")]
    private static partial Regex CountMarker();
}
