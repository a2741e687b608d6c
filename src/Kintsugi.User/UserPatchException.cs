namespace Kintsugi.User;

/// <summary>A user-space patch could not be read, applied to or reverted from a process.</summary>
public sealed class
    UserPatchException(string message, ExitCode exitCode = ExitCode.InputRefused, Exception? inner = null)
    : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = exitCode;
}
