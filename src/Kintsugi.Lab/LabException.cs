namespace Kintsugi.Lab;

/// <summary>The lab could not prepare or run a virtual machine.</summary>
public sealed class LabException(string message, ExitCode exitCode = ExitCode.LabFailure,
    Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = exitCode;
}
