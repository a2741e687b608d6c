using System.CommandLine;
using System.CommandLine.Invocation;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Kintsugi.Cli;

/// <summary>What every command shares: global options, error reporting, JSON output, progress lines.</summary>
internal static class Cli
{
    public static readonly Option<bool> Verbose = new("--verbose", "-v") { Description = "Show progress details and, on failure, the chain of causes", Recursive = true };

    public static Option<bool> Json() => new("--json") { Description = "Print machine-readable JSON" };

    public static string Version => typeof(Cli).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>Wraps a command body: maps Kintsugi's failures to their exit codes and messages.</summary>
    public static AsynchronousCommandLineAction Run(Func<ParseResult, Task<int>> body) => new Action(body);

    private sealed class Action(Func<ParseResult, Task<int>> body) : AsynchronousCommandLineAction
    {
        public override async Task<int> InvokeAsync(ParseResult parseResult, CancellationToken cancellationToken = default)
        {
            var verbose = parseResult.GetValue(Verbose);
            try { return await body(parseResult); }
            catch (KintsugiException e)
            {
                Console.Error.WriteLine($"kintsugi: error: {e.Message}");
                if (verbose) PrintCauses(e);
                return (int)e.ExitCode;
            }
            catch (UnauthorizedAccessException e)
            {
                Console.Error.WriteLine($"kintsugi: error: permission denied ({e.Message}); run as root");
                if (verbose) PrintCauses(e);
                return (int)ExitCode.Environment;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Not the input's fault nor the machine's: a defect of kintsugi, which the user can only report.
                Console.Error.WriteLine($"kintsugi: internal error: {e.Message}");
                if (verbose) PrintCauses(e);
                Console.Error.WriteLine("kintsugi: this is a bug in kintsugi, not a problem with your input; please report it" +
                    (verbose ? " with the details above" : " with the output of the same command rerun with --verbose"));
                return (int)ExitCode.InternalError;
            }
        }
    }

    private static void PrintCauses(Exception e)
    {
        for (var cause = e; cause is not null; cause = cause.InnerException)
        {
            Console.Error.WriteLine($"  caused by {cause.GetType().Name}: {cause.Message}");
            Console.Error.WriteLine(cause.StackTrace);
        }
    }

    public static void Progress(string message) => Console.Error.WriteLine($"kintsugi: {message}");

    public static void WriteJson<T>(T value, JsonTypeInfo<T> type) => Console.WriteLine(JsonSerializer.Serialize(value, type));
}
