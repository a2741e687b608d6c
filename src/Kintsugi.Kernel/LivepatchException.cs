namespace Kintsugi.Kernel;

/// <summary>A livepatch could not be loaded, transitioned, listed or removed on this machine.</summary>
public sealed class
    LivepatchException(string message, ExitCode exitCode = ExitCode.InternalError, Exception? inner = null)
    : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = exitCode;
}
