using System.IO.Compression;
using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>
/// Reads the complete vmlinux symbol table of an exact distribution kernel without its 283 MB debug
/// package: boot the shipped image once in the lab with <c>nokaslr</c> and read /proc/kallsyms as root.
/// The result is the kernel's own view (the order sympos counts in, link-time addresses that index the
/// image) and is cached beside the kernel.
/// </summary>
public static class KallsymsCapture
{
    public static Task<KernelSymbolTable> LoadAsync(LabMachine lab, KernelRelease release, string kernelDirectory,
        Action<string> progress, CancellationToken cancellation = default) =>
        LoadAsync(() => lab, release, kernelDirectory, progress, cancellation);

    /// <param name="lab">Called only when the symbol table is not cached yet.</param>
    /// <param name="bound">How long the boot may take (default <see cref="BootBound"/>).</param>
    public static async Task<KernelSymbolTable> LoadAsync(Func<LabMachine> lab, KernelRelease release,
        string kernelDirectory, Action<string> progress, CancellationToken cancellation = default,
        TimeSpan? bound = null)
    {
        var cached = Path.Combine(kernelDirectory, "kallsyms");
        if (!File.Exists(cached)) await CaptureAsync(lab, release, cached, bound ?? BootBound, progress, cancellation);
        return KernelSymbolTable.ParseKallsyms(await File.ReadAllTextAsync(cached, cancellation),
            SymbolTableSource.LabKallsyms);
    }

    /// <summary>
    /// How long the one boot may take. The table leaves the guest as 1.6 MB of base64 through an emulated serial port:
    /// about a minute and a half for a 6.12 kernel on a quiet 2-core host, over three minutes at a load of 30 to 40.
    /// </summary>
    public static readonly TimeSpan BootBound = TimeSpan.FromMinutes(10);

    private static async Task CaptureAsync(Func<LabMachine> lab, KernelRelease release, string cached, TimeSpan bound,
        Action<string> progress, CancellationToken cancellation)
    {
        // One boot per kernel, however many builds (catch-up resolves many files at once) ask at the same time.
        using var captureLock = await CacheLock.AcquireAsync(cached + ".lock", cancellation);
        if (!File.Exists(cached))
        {
            progress($"reading the symbol table of {release} from a lab boot (once per kernel)");
            var run = await lab().RunAsync(new LabRunSpec(release, "cat /proc/kallsyms | gzip -1 | base64", [], bound,
                KernelArguments: ["nokaslr"]), cancellation: cancellation);
            // A boot that did not finish (a bound reached under load, a crash of the shipped kernel) says nothing about
            // the fix: never a refusal, which a catch-up or a script would take as the fix's verdict.
            if (run.TimedOut || run.ExitCode is null)
                throw new BuildInterruptedException(
                    $"the lab boot that reads the symbol table of {release} did not finish " +
                    $"({run.Describe()}), so nothing about the fix is known: run the same command again (emulated " +
                    $"boots " +
                    "slow down with the machine's load)");
            if (run.ExitCode != 0)
                throw new SymbolResolutionException($"reading /proc/kallsyms in the lab failed: {run.Describe()}");
            string text;
            try
            {
                // The console's last words (the power-off line) can reach the output port after the command's own.
                var base64 = string.Concat(run.Output.Split('\n').TakeWhile(l =>
                    l.Length > 0 && l.All(c => char.IsAsciiLetterOrDigit(c) || c is '+' or '/' or '=')));
                using var gzip = new GZipStream(new MemoryStream(Convert.FromBase64String(base64)),
                    CompressionMode.Decompress);
                using var reader = new StreamReader(gzip);
                text = await reader.ReadToEndAsync(cancellation);
            }
            catch (Exception e) when (e is FormatException or InvalidDataException)
            {
                throw new SymbolResolutionException("the symbol table read from the lab guest is damaged", e);
            }
            var staging = cached + ".partial";
            await File.WriteAllTextAsync(staging, text, cancellation);
            File.Move(staging, cached, overwrite: true);
        }
    }
}
