using System.Diagnostics;
using System.Text;

namespace Kintsugi;

/// <summary>The outcome of an external command: exit status and what it printed.</summary>
public sealed record CommandResult(int ExitCode, string StandardOutput, string StandardError)
{
    public bool Succeeded => ExitCode == 0;
}

/// <summary>Runs tools Kintsugi delegates to (apt-get, dpkg-deb, make, qemu) with arguments passed as a list, never
/// through a shell.</summary>
public static class ExternalCommand
{
    public static async Task<CommandResult>
        RunAsync(string file, IEnumerable<string> arguments, string? workingDirectory = null,
        IReadOnlyDictionary<string, string>? environment = null, Action<string>? onOutputLine = null,
        CancellationToken cancellation = default)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var argument in arguments) info.ArgumentList.Add(argument);
        if (environment is not null) foreach (var (key, value) in environment) info.Environment[key] = value;

        using var process = new Process { StartInfo = info };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) =>
            { if (e.Data is null) return; lock (stdout) stdout.AppendLine(e.Data); onOutputLine?.Invoke(e.Data); };
        process.ErrorDataReceived += (_, e) =>
            { if (e.Data is null) return; lock (stderr) stderr.AppendLine(e.Data); onOutputLine?.Invoke(e.Data); };
        try { process.Start(); }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new ToolMissingException($"cannot run {file}: {e.Message}; install it " +
                $"(scripts/install-prerequisites.sh installs everything Kintsugi needs)", e);
        }
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try { await process.WaitForExitAsync(cancellation); }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        return new CommandResult(process.ExitCode, stdout.ToString(), stderr.ToString());
    }

    public static CommandResult Run(string file, params string[] arguments) =>
        RunAsync(file, arguments).GetAwaiter().GetResult();

    /// <summary>Whether an executable is on PATH.</summary>
    public static bool Exists(string file) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':')
        .Any(dir => File.Exists(Path.Combine(dir, file)));
}

/// <summary>A tool Kintsugi needs is not installed.</summary>
public sealed class ToolMissingException(string message, Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode => ExitCode.Environment;
}
