using System.IO.Compression;
using Kintsugi.Kernel.Archive;
using Kintsugi.Lab;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>
/// Reads the complete vmlinux symbol table of an exact distribution kernel without its 283 MB debug package
/// (Debian ships only a placeholder System.map): decoded from the kernel's own kallsyms tables in the vmlinux inside
/// its image (<see cref="ImageKallsyms"/>, under a second), or, when they cannot be read, from one boot of the
/// shipped image in the lab with <c>nokaslr</c>, reading /proc/kallsyms as root (minutes under emulation). Either is
/// the kernel's own view (the order sympos counts in, link-time addresses that index the image) and is cached beside
/// the kernel: <c>kallsyms</c> from a boot, <c>kallsyms-image</c> from the image, in /proc/kallsyms's format.
/// </summary>
public static class KallsymsCapture
{
    /// <summary>The table /proc/kallsyms of a lab boot listed, as the guest printed it.</summary>
    public const string BootedFileName = "kallsyms";
    /// <summary>The table decoded from the image, in the same format.</summary>
    public const string DecodedFileName = "kallsyms-image";

    /// <param name="lab">Called only when the image's tables cannot be read and no boot's table is cached.</param>
    /// <param name="image">The vmlinux inside the kernel's image.</param>
    /// <param name="bound">How long the boot may take (default <see cref="BootBound"/>).</param>
    public static async Task<KernelSymbolTable> LoadAsync(Func<LabMachine> lab, KernelRelease release,
        string kernelDirectory, VmlinuxImage image, Action<string> progress, CancellationToken cancellation = default,
        TimeSpan? bound = null)
    {
        // A boot's table, where one was captured before the image was read, is the kernel's own listing: kept.
        var booted = Path.Combine(kernelDirectory, BootedFileName);
        if (File.Exists(booted)) return await ReadAsync(booted, SymbolTableSource.LabKallsyms, cancellation);
        var decoded = Path.Combine(kernelDirectory, DecodedFileName);
        if (File.Exists(decoded)) return await ReadAsync(decoded, SymbolTableSource.ImageKallsyms, cancellation);
        KernelSymbolTable table;
        try
        {
            table = ImageKallsyms.Read(image).Symbols;
        }
        catch (ImageKallsymsException e)
        {
            progress($"the symbol table of {release} cannot be read from its image ({e.Message}): reading it from " +
                "a lab boot instead");
            return await BootAsync(lab, release, kernelDirectory, progress, cancellation, bound);
        }
        progress($"read the symbol table of {release} from its image ({table.Symbols.Count} symbols)");
        var staging = $"{decoded}.{Environment.ProcessId}.{Guid.NewGuid():N}.partial";
        await using (var writer = new StreamWriter(staging))
            await table.WriteKallsymsAsync(writer, cancellation);
        File.Move(staging, decoded, overwrite: true);
        return table;
    }

    /// <summary>
    /// The table /proc/kallsyms lists in one lab boot of the kernel with <c>nokaslr</c>, cached as
    /// <see cref="BootedFileName"/>: the fallback when the image cannot be read, and the ground truth the image's
    /// decoding is proven against.
    /// </summary>
    /// <param name="lab">Called only when the boot's table is not cached yet.</param>
    /// <param name="bound">How long the boot may take (default <see cref="BootBound"/>).</param>
    public static async Task<KernelSymbolTable> BootAsync(Func<LabMachine> lab, KernelRelease release,
        string kernelDirectory, Action<string> progress, CancellationToken cancellation = default,
        TimeSpan? bound = null)
    {
        var cached = Path.Combine(kernelDirectory, BootedFileName);
        if (!File.Exists(cached)) await CaptureAsync(lab, release, cached, bound ?? BootBound, progress, cancellation);
        return await ReadAsync(cached, SymbolTableSource.LabKallsyms, cancellation);
    }

    private static async Task<KernelSymbolTable> ReadAsync(string path, SymbolTableSource source,
        CancellationToken cancellation) =>
        KernelSymbolTable.ParseKallsyms(await File.ReadAllTextAsync(path, cancellation), source);

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
