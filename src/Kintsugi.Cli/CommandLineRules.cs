using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Text.Json;

namespace Kintsugi.Cli;

/// <summary>
/// The rules every command follows, in one place: what is a usage error, how a failure is printed under
/// <c>--json</c>, and the usage examples that <c>--help</c> shows after System.CommandLine's own text.
/// </summary>
internal static class CommandLineRules
{
    private static readonly Dictionary<Command, string[]> ExamplesByCommand = [];

    /// <summary>Registers usage examples that <c>--help</c> prints for <paramref name="command"/>.</summary>
    public static T WithExamples<T>(this T command, params string[] examples) where T : Command
    {
        ExamplesByCommand[command] = examples;
        return command;
    }

    /// <summary>
    /// The command line's usage errors. System.CommandLine drops its own errors when --help is present, so
    /// <c>kintsugi nonsense --help</c> would print the root's help and succeed: an unknown word is an error
    /// whatever follows it.
    /// </summary>
    public static IReadOnlyList<string> UsageErrors(ParseResult parse)
    {
        // [suggest:N] (shell completion) parses a partial command line on purpose: no errors.
        if (parse.RootCommandResult.Command is RootCommand root &&
            root.Directives.OfType<System.CommandLine.Completions.SuggestDirective>().FirstOrDefault() is { } suggest
                && parse.GetResult(suggest) is not null)
            return [];
        // Under --help only unknown words count: help is how one learns what a command needs.
        if (parse.Action is ExamplesHelpAction) return UnknownWords(parse);
        var errors = parse.Errors.Select(e => e.Message).ToList();
        return errors.Count > 0 ? errors : UnknownWords(parse);
    }

    private static List<string> UnknownWords(ParseResult parse) =>
        parse.CommandResult.Command.TreatUnmatchedTokensAsErrors
            ? [.. parse.UnmatchedTokens.Select(token => $"Unrecognized command or argument '{token}'.")] : [];

    /// <summary>
    /// Prints usage errors (as a JSON error too when --json was asked for) and returns the usage exit code.
    /// </summary>
    public static int ReportUsageErrors(ParseResult parse, IReadOnlyList<string> errors)
    {
        var path = CommandPath(parse.CommandResult);
        foreach (var error in errors) Console.Error.WriteLine($"kintsugi: {error}");
        Console.Error.WriteLine($"kintsugi: see {path} --help");
        if (parse.Tokens.Any(t => t.Value == "--json")) WriteJsonError(ExitCode.Usage, string.Join(" ", errors));
        return (int)ExitCode.Usage;
    }

    /// <summary>The command's words, for example <c>kintsugi kernel load</c>.</summary>
    public static string CommandPath(System.CommandLine.Parsing.CommandResult result)
    {
        var words = new List<string>();
        for (System.CommandLine.Parsing.SymbolResult? r = result; r is not null; r = r.Parent)
            if (r is System.CommandLine.Parsing.CommandResult c)
                words.Insert(0, c.Command is RootCommand ? "kintsugi" : c.Command.Name);
        return string.Join(' ', words);
    }

    /// <summary>Whether the invoked command has a --json option and it was given.</summary>
    public static bool JsonRequested(ParseResult parse) =>
        parse.CommandResult.Command.Options.OfType<Option<bool>>().FirstOrDefault(o => o.Name == "--json") is { } json
            && parse.GetValue(json);

    /// <summary>
    /// A failure under --json: one object on standard output, so a script reading the output always gets
    /// JSON (the message goes to standard error as well, for people).
    /// </summary>
    public static void WriteJsonError(ExitCode code, string message)
    {
        using var stream = Console.OpenStandardOutput();
        using (var writer = new Utf8JsonWriter(stream,
            new JsonWriterOptions
            {
                Indented = true,
                Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping
            }))
        {
            writer.WriteStartObject();
            writer.WriteStartObject("error");
            writer.WriteNumber("exitCode", (int)code);
            writer.WriteString("kind", Kind(code));
            writer.WriteString("message", message);
            writer.WriteEndObject();
            writer.WriteEndObject();
        }
        stream.WriteByte((byte)'\n');
    }

    /// <summary>The exit code's name in the JSON vocabulary (kebab case of <see cref="ExitCode"/>).</summary>
    public static string Kind(ExitCode code) => code switch
    {
        ExitCode.InternalError => "internal-error",
        ExitCode.Usage => "usage",
        ExitCode.InputRefused => "input-refused",
        ExitCode.TransitionFailed => "transition-failed",
        ExitCode.Environment => "environment",
        ExitCode.NotFound => "not-found",
        ExitCode.Disabled => "disabled",
        ExitCode.TestFailed => "test-failed",
        ExitCode.NothingToDo => "nothing-to-do",
        ExitCode.CatchUpIncomplete => "catch-up-incomplete",
        ExitCode.OutOfDate => "out-of-date",
        ExitCode.LabTimeout => "lab-timeout",
        ExitCode.LabFailure => "lab-failure",
        ExitCode.Interrupted => "interrupted",
        _ => "error",
    };

    /// <summary>Makes the root's --help print the invoked command's examples after the standard text.</summary>
    public static void InstallExamples(RootCommand root)
    {
        var help = root.Options.OfType<HelpOption>().Single();
        var standard = (HelpAction)help.Action!;
        help.Action = new ExamplesHelpAction(standard);
    }

    private sealed class ExamplesHelpAction(HelpAction standard) : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            // An unknown word before --help is a usage error, not a request for the parent's help.
            if (UnknownWords(parseResult) is { Count: > 0 } errors) return ReportUsageErrors(parseResult, errors);
            standard.Invoke(parseResult);
            if (ExamplesByCommand.TryGetValue(parseResult.CommandResult.Command, out var examples))
            {
                Console.WriteLine("Examples:");
                foreach (var example in examples) Console.WriteLine($"  {example}");
                Console.WriteLine();
            }
            return 0;
        }
    }
}
