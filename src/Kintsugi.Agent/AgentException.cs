namespace Kintsugi.Agent;

/// <summary>The agent cannot run as configured, or the server refused it.</summary>
public sealed class AgentException(string message, ExitCode exitCode = ExitCode.Environment,
    Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = exitCode;
}
