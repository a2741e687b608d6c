using System.Text;
using System.Text.RegularExpressions;

namespace Kintsugi.Kernel.CatchUp;

/// <summary>What a top-level construct of a C file is, as far as a livepatch cares.</summary>
public enum CDeclarationKind
{
    Macro,
    Include,
    /// <summary>#if, #ifdef, #else, #endif ...: which code is compiled.</summary>
    Conditional,
    /// <summary>A function definition that is not inline.</summary>
    Function,
    /// <summary>A static inline (or __always_inline) function definition: code of every includer.</summary>
    InlineFunction,
    /// <summary>A struct or union definition: a memory layout.</summary>
    Aggregate,
    Enum,
    Typedef,
    /// <summary>A prototype, an extern declaration, a forward declaration or a declaring macro.</summary>
    Declaration,
    /// <summary>A variable definition (with or without initializer).</summary>
    Variable,
    /// <summary>Anything the scanner cannot name (#pragma, #error, a stray token).</summary>
    Other,
}

/// <summary>One top-level construct: its kind, its name, its text with comments and spacing normalized.</summary>
public sealed record CDeclaration(CDeclarationKind Kind, string Name, string Text, int Line)
{
    /// <summary>Kind and name: what identifies the construct across two versions of the file.</summary>
    public string Key => $"{Kind}:{Name}";
}

/// <summary>
/// Splits C source into its top-level constructs without preprocessing it: enough to tell which
/// functions, macros and structures a change touches, by comparing the constructs of the two versions.
/// Comments and whitespace never count as change.
/// </summary>
public static partial class CDeclarations
{
    public static IReadOnlyList<CDeclaration> Parse(string source)
    {
        var text = StripComments(source.Replace("\r\n", "\n"));
        var lines = text.Split('\n');
        var result = new List<CDeclaration>();
        var current = new StringBuilder();
        var startLine = 0;
        int braces = 0, parens = 0;
        var isFunctionBody = false;
        var sawBody = false;
        var active = false; // inside a construct (something other than whitespace was seen)

        for (var index = 0; index < lines.Length; index++)
        {
            var line = lines[index];
            // A preprocessor line, joined with its continuations.
            if (line.TrimStart().StartsWith('#'))
            {
                var directive = new StringBuilder(line.TrimEnd());
                var first = index;
                while (directive.Length > 0 && directive[^1] == '\\' && index + 1 < lines.Length)
                {
                    directive.Length--;
                    directive.Append(' ').Append(lines[++index].TrimEnd());
                }
                if (active)
                {
                    // Inside a construct: part of its text (a member under #ifdef changes the layout).
                    current.Append('\n').Append(directive).Append('\n');
                    continue;
                }
                result.Add(Directive(Normalize(directive.ToString()), first + 1));
                continue;
            }

            foreach (var c in line)
            {
                if (!active)
                {
                    if (char.IsWhiteSpace(c)) continue;
                    active = true;
                    current.Clear();
                    startLine = index + 1;
                    sawBody = false;
                    isFunctionBody = false;
                }
                current.Append(c);
                switch (c)
                {
                    case '"' or '\'':
                        break;
                    case '(':
                        parens++;
                        break;
                    case ')':
                        parens = Math.Max(0, parens - 1);
                        break;
                    case '{':
                        if (braces == 0 && parens == 0 && !sawBody)
                        {
                            sawBody = true;
                            isFunctionBody = LooksLikeFunctionHead(current.ToString(0, current.Length - 1));
                        }
                        braces++;
                        break;
                    case '}':
                        braces = Math.Max(0, braces - 1);
                        if (braces == 0 && parens == 0 && isFunctionBody)
                        {
                            result.Add(Construct(Normalize(current.ToString()), startLine));
                            current.Clear();
                            active = false;
                        }
                        break;
                    case ';':
                        if (braces == 0 && parens == 0)
                        {
                            result.Add(Construct(Normalize(current.ToString()), startLine));
                            current.Clear();
                            active = false;
                        }
                        break;
                }
            }
            if (active) current.Append('\n');
        }
        if (active)
            result.Add(Construct(Normalize(current.ToString()), startLine));
        return result;
    }

    /// <summary>The function definitions (inline or not) of a C file, by name.</summary>
    public static IEnumerable<CDeclaration> Functions(IEnumerable<CDeclaration> declarations) =>
        declarations.Where(d => d.Kind is CDeclarationKind.Function or CDeclarationKind.InlineFunction);

    private static CDeclaration Directive(string text, int line)
    {
        var match = DirectiveName().Match(text);
        var word = match.Success ? match.Groups["word"].Value : "";
        var rest = match.Success ? match.Groups["rest"].Value.Trim() : text;
        return word switch
        {
            "define" or "undef" => new(CDeclarationKind.Macro,
                MacroName().Match(rest) is { Success: true } m ? m.Value : rest, text, line),
            "include" => new(CDeclarationKind.Include, rest, text, line),
            "if" or "ifdef" or "ifndef" or "elif" or "else" or "endif" or "elifdef" or "elifndef" =>
                new(CDeclarationKind.Conditional, word + " " + rest, text, line),
            _ => new(CDeclarationKind.Other, text, text, line),
        };
    }

    private static CDeclaration Construct(string text, int line)
    {
        var brace = text.IndexOf('{');
        var head = brace < 0 ? text : text[..brace];
        if (text.StartsWith("typedef ", StringComparison.Ordinal))
            return new(CDeclarationKind.Typedef, TypedefName(text), text, line);
        if (AggregateHead().Match(head) is { Success: true } aggregate && brace >= 0)
        {
            var kind = aggregate.Groups["kind"].Value == "enum" ? CDeclarationKind.Enum : CDeclarationKind.Aggregate;
            var tag = aggregate.Groups["tag"].Value;
            // An anonymous one is known by its first member or enumerator, which survives edits elsewhere in the file.
            var label = tag.Length > 0 ? tag
                : "{" + (Identifier().Match(text, brace) is { Success: true } member ? member.Value : "") + "...}";
            return new(kind, $"{aggregate.Groups["kind"].Value} {label}", text, line);
        }
        if (brace >= 0 && text.EndsWith('}') && LooksLikeFunctionHead(head))
        {
            var inline = InlineWord().IsMatch(head);
            return new(inline ? CDeclarationKind.InlineFunction : CDeclarationKind.Function, FunctionName(head), text,
                line);
        }
        if (ForwardDeclaration().Match(text) is { Success: true } forward)
            return new(CDeclarationKind.Declaration, forward.Groups["name"].Value, text, line);
        var equals = TopLevelIndexOf(head, '=');
        var beforeValue = equals < 0 ? head.TrimEnd(';', ' ') : head[..equals];
        if (equals < 0 && TopLevelIndexOf(beforeValue, '(') is var open and >= 0
            && !beforeValue.Contains("(*", StringComparison.Ordinal))
            return new(CDeclarationKind.Declaration, FunctionName(beforeValue[..open] + "()"), text, line);
        if (beforeValue.StartsWith("extern ", StringComparison.Ordinal))
            return new(CDeclarationKind.Declaration, LastIdentifier(beforeValue), text, line);
        var name = LastIdentifier(beforeValue);
        return name.Length > 0 ? new(CDeclarationKind.Variable, name, text, line)
            : new(CDeclarationKind.Other, text, text, line);
    }

    private static bool LooksLikeFunctionHead(string head)
    {
        head = head.Trim();
        if (head.Length == 0 || TopLevelIndexOf(head, '=') >= 0) return false;
        if (AggregateHead().IsMatch(head) || head.StartsWith("typedef ", StringComparison.Ordinal)) return false;
        return head.Contains('(') && head.Contains(')');
    }

    /// <summary>The identifier before the first top-level parenthesis: foo in <c>static int foo(int a)</c>, also
    /// after an attribute (<c>__attribute__((noipa)) int foo(void)</c>).</summary>
    private static string FunctionName(string head)
    {
        head = WithoutAttributes(head);
        var open = TopLevelIndexOf(head, '(');
        var before = open < 0 ? head : head[..open];
        var name = LastIdentifier(before);
        return name.Length > 0 ? name : Normalize(head);
    }

    private static string TypedefName(string text)
    {
        var pointer = FunctionPointerName().Match(text);
        if (pointer.Success) return pointer.Groups["name"].Value;
        var end = text.LastIndexOf('}');
        return LastIdentifier((end >= 0 ? text[(end + 1)..] : text).TrimEnd(';', ' ').Split('[')[0]);
    }

    private static string LastIdentifier(string text)
    {
        var matches = Identifier().Matches(text.Split('[')[0]);
        for (var i = matches.Count - 1; i >= 0; i--)
            if (!Attributes.Contains(matches[i].Value)) return matches[i].Value;
        return "";
    }

    private static readonly HashSet<string> Attributes = ["__init", "__exit", "__initdata", "__read_mostly",
        "__ro_after_init", "__maybe_unused",
        "__always_unused", "__cold", "__weak", "__visible", "noinline", "notrace", "__noreturn", "__rcu", "__percpu",
            "__user", "__iomem",
        "__cacheline_aligned", "__cacheline_aligned_in_smp", "__aligned", "__packed", "__must_check", "asmlinkage",
            "__latent_entropy",
        "__section", "__used", "__initconst", "__refdata", "__meminitdata", "__attribute__", "const", "volatile"];

    /// <summary>The text without its GNU <c>__attribute__((...))</c> groups.</summary>
    private static string WithoutAttributes(string text)
    {
        const string attribute = "__attribute__";
        for (var at = text.IndexOf(attribute, StringComparison.Ordinal); at >= 0;
            at = text.IndexOf(attribute, StringComparison.Ordinal))
        {
            var open = text.IndexOf('(', at + attribute.Length);
            if (open < 0 || text[(at + attribute.Length)..open].Trim().Length > 0) return text;
            var depth = 0;
            var end = open;
            for (; end < text.Length; end++)
            {
                if (text[end] == '(') depth++;
                else if (text[end] == ')' && --depth == 0) break;
            }
            if (end >= text.Length) return text;
            text = text[..at] + " " + text[(end + 1)..];
        }
        return text;
    }

    private static int TopLevelIndexOf(string text, char wanted)
    {
        var depth = 0;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c == wanted && depth == 0) return i;
            if (c is '(' or '[' or '{') depth++;
            else if (c is ')' or ']' or '}') depth = Math.Max(0, depth - 1);
        }
        return -1;
    }

    /// <summary>Comments become spaces (newlines kept, so line numbers stay); string and character literals are kept as
    /// they are.</summary>
    internal static string StripComments(string source)
    {
        var output = new StringBuilder(source.Length);
        for (var i = 0; i < source.Length; i++)
        {
            var c = source[i];
            if (c == '/' && i + 1 < source.Length && source[i + 1] == '*')
            {
                var end = source.IndexOf("*/", i + 2, StringComparison.Ordinal);
                var stop = end < 0 ? source.Length : end + 2;
                for (var j = i; j < stop; j++) output.Append(source[j] == '\n' ? '\n' : ' ');
                i = stop - 1;
            }
            else if (c == '/' && i + 1 < source.Length && source[i + 1] == '/')
            {
                while (i < source.Length && source[i] != '\n') i++;
                if (i < source.Length) output.Append('\n');
            }
            else if (c is '"' or '\'')
            {
                var start = i;
                for (i++; i < source.Length && source[i] != c && source[i] != '\n'; i++)
                    if (source[i] == '\\') i++;
                output.Append(source, start, Math.Min(i + 1, source.Length) - start);
                // Literals are copied whole so that a brace or semicolon inside one never counts.
                if (i < source.Length) continue;
            }
            else output.Append(c);
        }
        return MaskLiterals(output.ToString());
    }

    /// <summary>Braces, parentheses and semicolons inside literals are replaced so that the scanner's counting ignores
    /// them.</summary>
    private static string MaskLiterals(string text)
    {
        var chars = text.ToCharArray();
        for (var i = 0; i < chars.Length; i++)
        {
            var quote = chars[i];
            if (quote is not ('"' or '\'')) continue;
            for (i++; i < chars.Length && chars[i] != quote && chars[i] != '\n'; i++)
            {
                if (chars[i] == '\\') { i++; continue; }
                chars[i] = chars[i] switch
                {
                    '{' => '\u2983',
                    '}' => '\u2984',
                    '(' => '\u2985',
                    ')' => '\u2986',
                    ';' =>
                    '\u204F',
                    '#' => '\u266F',
                    _ => chars[i]
                };
            }
        }
        return new string(chars);
    }

    private static string Normalize(string text) => Whitespace().Replace(text, " ").Trim();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    [GeneratedRegex(@"^#\s*(?<word>[a-z_]+)(?<rest>.*)$")]
    private static partial Regex DirectiveName();

    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_]*")]
    private static partial Regex MacroName();

    [GeneratedRegex(@"[A-Za-z_][A-Za-z0-9_]*")]
    private static partial Regex Identifier();

    [GeneratedRegex(@"(^|\s)(?<kind>struct|union|enum)(\s+__[a-z_]+(\([^)]*\))?)*" +
        @"\s*(?<tag>[A-Za-z_][A-Za-z0-9_]*)?\s*$")]
    private static partial Regex AggregateHead();

    [GeneratedRegex(@"^(?<name>(struct|union|enum)\s+[A-Za-z_][A-Za-z0-9_]*)\s*;$")]
    private static partial Regex ForwardDeclaration();

    [GeneratedRegex(@"\(\s*\*\s*(?<name>[A-Za-z_][A-Za-z0-9_]*)\s*\)")]
    private static partial Regex FunctionPointerName();

    [GeneratedRegex(@"\b(inline|__inline|__inline__|__always_inline)\b")]
    private static partial Regex InlineWord();
}
