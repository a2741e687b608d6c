using System.CommandLine;
using System.CommandLine.Invocation;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Kintsugi.Cli;

/// <summary>What every command shares: global options, error reporting, JSON output, progress lines.</summary>
internal static class Cli
{
    public static readonly Option<bool> Verbose = new("--verbose", "-v")
    { Description = "Show progress details and, on failure, the chain of causes", Recursive = true };

    public static Option<bool> Json() => new("--json") { Description = "Print machine-readable JSON" };

    public static string Version => typeof(Cli).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>How long an interrupted command has to stop its child processes and keep what it finished.</summary>
    public static readonly TimeSpan TerminationGrace = TimeSpan.FromSeconds(15);

    /// <summary>Wraps a command body: maps Kintsugi's failures to their exit codes and messages.</summary>
    public static AsynchronousCommandLineAction Run(Func<ParseResult, Task<int>> body) =>
        new Action((parse, _) => body(parse));

    /// <summary>Wraps a long command body that stops, with its child processes, when the process is interrupted
    /// (SIGINT, SIGTERM): it gets the token that says so.</summary>
    public static AsynchronousCommandLineAction Run(Func<ParseResult, CancellationToken, Task<int>> body) =>
        new Action(body);

    private sealed class Action(Func<ParseResult, CancellationToken, Task<int>> body) : AsynchronousCommandLineAction
    {
        public override async Task<int> InvokeAsync(ParseResult parseResult,
            CancellationToken cancellationToken = default)
        {
            var verbose = parseResult.GetValue(Verbose);
            var json = CommandLineRules.JsonRequested(parseResult);
            try { return await body(parseResult, cancellationToken); }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                const string message = "interrupted: what was finished is kept; run the same command again to go on";
                Console.Error.WriteLine($"kintsugi: {message}");
                if (json) CommandLineRules.WriteJsonError(ExitCode.Interrupted, message);
                return (int)ExitCode.Interrupted;
            }
            catch (KintsugiException e)
            {
                return Fail(e.ExitCode, $"error: {e.Message}", e.Message, e);
            }
            catch (UnauthorizedAccessException e)
            {
                var message = $"permission denied ({e.Message}); run as root";
                return Fail(ExitCode.Environment, $"error: {message}", message, e);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Not the input's fault nor the machine's: a defect of kintsugi, which the user can only report.
                var code = Fail(ExitCode.InternalError, $"internal error: {e.Message}", e.Message, e);
                Console.Error.WriteLine("kintsugi: this is a bug in kintsugi, not a problem with your input; please " +
                    "report it" +
                    (verbose ? " with the details above"
                        : " with the output of the same command rerun with --verbose"));
                return code;
            }

            int Fail(ExitCode code, string line, string message, Exception e)
            {
                JournalLog.Write(code == ExitCode.Disabled ? JournalLog.Warning : JournalLog.Error,
                    $"kintsugi: {line}");
                if (verbose) PrintCauses(e);
                if (json) CommandLineRules.WriteJsonError(code, message);
                return (int)code;
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

    public static void WriteJson<T>(T value, JsonTypeInfo<T> type) =>
        Console.WriteLine(JsonSerializer.Serialize(value, type));
}
