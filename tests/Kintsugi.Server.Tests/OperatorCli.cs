namespace Kintsugi.Server.Tests;

/// <summary>
/// The operator's <c>kintsugi server ...</c>, the Cli project's kintsugi.dll copied beside these tests, run as a
/// real process against a running server with the URL, token and pinned certificate given here (never
/// $KINTSUGI_SERVER_CA of the test run). Returns the exit code and what it printed, standard output first.
/// </summary>
internal static class OperatorCli
{
    public static (int Code, string Out) Run(string url, string token, string? ca, IEnumerable<string> args,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var arguments = new List<string> { Path.Combine(AppContext.BaseDirectory, "kintsugi.dll"), "server", "--url",
            url, "--token", token };
        if (ca is not null) arguments.AddRange(["--ca", ca]);
        arguments.AddRange(args);
        // An empty value is no value: the CLI reads $KINTSUGI_SERVER_CA only when it is set to a path.
        var variables = new Dictionary<string, string> { ["KINTSUGI_SERVER_CA"] = "" };
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) variables[name] = value;
        var result = ExternalCommand.RunAsync("dotnet", arguments, environment: variables).GetAwaiter().GetResult();
        return (result.ExitCode, result.StandardOutput + result.StandardError);
    }
}
