namespace Kintsugi.Lab;

/// <summary>Finds the self-contained single-file kintsugi binary that goes into every guest.</summary>
public static class GuestBinary
{
    public const string EnvironmentVariable = "KINTSUGI_GUEST_BINARY";

    public static string Locate()
    {
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } configured)
            return File.Exists(configured) ? configured
                : throw new LabException($"{EnvironmentVariable}={configured} does not exist", ExitCode.Environment);
        // A single-file build has no assembly beside it: then this very program is the guest binary.
        if (Environment.ProcessPath is { } self && Path.GetFileName(self) == "kintsugi"
            && !File.Exists(Path.Combine(AppContext.BaseDirectory, "kintsugi.dll")))
            return self;
        throw new LabException(
            $"no guest binary: run through ./kintsugi (which publishes it to artifacts/guest/kintsugi) or set " +
            $"{EnvironmentVariable} " +
            "to a self-contained single-file build (dotnet publish src/Kintsugi.Cli -r linux-x64 --self-contained " +
            "-p:PublishSingleFile=true)", ExitCode.Environment);
    }
}
