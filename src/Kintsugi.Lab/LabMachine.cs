using System.Diagnostics;
using Kintsugi.Kernel.Archive;

namespace Kintsugi.Lab;

/// <summary>
/// What to run in one lab boot. <see cref="Disk"/> is a persistent data disk the initramfs guest mounts at
/// /persist; <see cref="RootDisk"/> instead is a whole Debian root file system (an ext4 image with systemd) the
/// guest boots into, with systemd as PID 1 running the command from a unit (scripts/lab-systemd-root.sh).
/// <see cref="ForwardedPorts"/> make guest TCP ports reachable on the host's loopback (an SSH server, for example).
/// </summary>
public sealed record LabRunSpec(
    KernelRelease Kernel,
    string Command,
    IReadOnlyList<GuestFile> Files,
    TimeSpan Timeout,
    string? Disk = null,
    IReadOnlyList<string>? KernelArguments = null,
    bool Interactive = false,
    int MemoryMiB = 1024,
    int Cpus = 2,
    string? RootDisk = null,
    IReadOnlyList<PortForward>? ForwardedPorts = null);

/// <summary>A TCP port of the guest reachable at 127.0.0.1:<see cref="HostPort"/> on the host (QEMU user networking's
/// hostfwd).</summary>
public sealed record PortForward(int HostPort, int GuestPort)
{
    public string QemuOption => $"hostfwd=tcp:127.0.0.1:{HostPort}-:{GuestPort}";
}

/// <summary>How a lab boot ended. ExitCode is the guest command's, or null when it never reported one.</summary>
public sealed record LabRunResult(int? ExitCode, bool TimedOut, string Console, string Output, TimeSpan Duration,
    IReadOnlyList<string> Control)
{
    public string Describe() => TimedOut ? $"timed out after {Duration.TotalSeconds:0.0} s"
        : ExitCode is { } code ? $"guest command exited {code} after {Duration.TotalSeconds:0.0} s"
        : "the guest stopped before its command finished (a kernel panic, crash or reboot; see the console)";
}

/// <summary>
/// Boots an exact distribution kernel under QEMU (software emulation) with a generated initramfs and
/// runs one command in it, through the host's qemu-system-x86_64: with KVM when /dev/kvm is usable, else emulated
/// (<see cref="LabAccelerator"/>).
/// </summary>
public sealed class
    LabMachine(DebianKernelArchive archive, string cacheRoot, string guestBinary, Action<string> progress)
{
    public async Task<LabRunResult>
        RunAsync(LabRunSpec spec, Action<string>? console = null, CancellationToken cancellation = default)
    {
        if (!ExternalCommand.Exists("qemu-system-x86_64"))
            throw new LabException("qemu-system-x86_64 is not installed: run scripts/install-prerequisites.sh (or " +
                "apt-get install qemu-system-x86)", ExitCode.Environment);
        var kernel = await archive.FetchAsync(spec.Kernel, KernelParts.Image, cancellation);
        var work = Directory.CreateTempSubdirectory("kintsugi-lab-").FullName;
        try
        {
            if (spec.RootDisk is not null && (spec.Disk is not null || !File.Exists(spec.RootDisk)))
                throw new LabException(spec.Disk is not null ? "a root disk and a persistent disk cannot be combined"
                    : $"the root disk {spec.RootDisk} does not exist", ExitCode.Usage);
            var initrd = await new GuestImage(cacheRoot, progress)
                .BuildAsync(kernel, guestBinary, spec.Command, spec.Interactive, spec.Files, work,
                cancellation, systemdRoot: spec.RootDisk is not null);
            if (spec.Disk is not null) await PersistentDisk.EnsureAsync(spec.Disk, cancellation);
            var outputPath = Path.Combine(work, "output");
            var controlPath = Path.Combine(work, "control");
            var accelerator = LabAccelerator.Select();
            var arguments = QemuArguments(accelerator, kernel, initrd, spec, outputPath, controlPath);
            progress($"booting {kernel.Target.Release} under QEMU with {accelerator.Name} ({accelerator.Reason})");
            var clock = Stopwatch.StartNew();
            var (timedOut, consoleText) = (false, "");
            if (spec.Interactive) await RunInteractiveAsync(arguments, cancellation);
            else (timedOut, consoleText) = await RunCapturedAsync(arguments, spec.Timeout, console, cancellation);
            var control = File.Exists(controlPath) ? (await File.ReadAllTextAsync(controlPath, cancellation))
                .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [];
            var exitLine = control.LastOrDefault(l => l.StartsWith("exit ", StringComparison.Ordinal));
            int? exitCode = exitLine is not null && int.TryParse(exitLine[5..], out var rc) ? rc : null;
            var output = File.Exists(outputPath)
                ? (await File.ReadAllTextAsync(outputPath, cancellation)).Replace("\r", "") : "";
            return new LabRunResult(exitCode, timedOut, consoleText, output, clock.Elapsed, control);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static List<string> QemuArguments(LabAccelerator accelerator, FetchedKernel kernel, string initrd,
        LabRunSpec spec, string outputPath, string controlPath)
    {
        // no_timer_check: under emulation on a loaded host the kernel's IO-APIC timer check can fail and panic at boot.
        var append = new List<string> { "console=ttyS0", "panic=-1", "quiet", "loglevel=4", "no_timer_check" };
        append.AddRange(spec.KernelArguments ?? []);
        List<string> arguments =
        [
            .. accelerator.QemuArguments,
            "-machine", "pc", "-m", spec.MemoryMiB.ToString(), "-smp", spec.Cpus.ToString(),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", kernel.Vmlinuz, "-initrd", initrd, "-append", string.Join(' ', append),
            "-serial", spec.Interactive ? "mon:stdio" : "stdio",
            "-serial", "file:" + outputPath,
            "-serial", "file:" + controlPath,
            // User-mode networking: the guest reaches the host's loopback as 10.0.2.2.
            "-netdev", string.Join(',', ["user,id=net0", .. (spec.ForwardedPorts ?? []).Select(f => f.QemuOption)]),
            "-device", "virtio-net-pci,netdev=net0",
        ];
        if ((spec.RootDisk ?? spec.Disk) is { } disk)
            arguments.AddRange(["-drive", $"file={disk},if=virtio,format=raw"]);
        return arguments;
    }

    private static async Task<(bool TimedOut, string Console)> RunCapturedAsync(List<string> arguments,
        TimeSpan timeout, Action<string>? console, CancellationToken cancellation)
    {
        var info = new ProcessStartInfo("qemu-system-x86_64")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false
        };
        foreach (var argument in arguments) info.ArgumentList.Add(argument);
        using var process = new Process { StartInfo = info };
        var text = new System.Text.StringBuilder();
        void OnLine(string? line)
        {
            if (line is null) return;
            line = line.Replace("\r", "");
            lock (text) text.AppendLine(line);
            console?.Invoke(line);
        }
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        deadline.CancelAfter(timeout);
        var timedOut = false;
        try { await process.WaitForExitAsync(deadline.Token); }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None);
            cancellation.ThrowIfCancellationRequested();
            timedOut = true;
        }
        process.WaitForExit(); // drains the asynchronous readers
        lock (text) return (timedOut, text.ToString());
    }

    /// <summary>QEMU on this process's own terminal: a person types into the guest's console.</summary>
    private static async Task RunInteractiveAsync(List<string> arguments, CancellationToken cancellation)
    {
        var info = new ProcessStartInfo("qemu-system-x86_64") { UseShellExecute = false };
        foreach (var argument in arguments) info.ArgumentList.Add(argument);
        using var process = Process.Start(info)!;
        await process.WaitForExitAsync(cancellation);
    }
}

/// <summary>A raw ext4 disk image that survives between boots (mounted by the guest at /persist).</summary>
public static class PersistentDisk
{
    public static async Task EnsureAsync(string path, CancellationToken cancellation)
    {
        if (File.Exists(path)) return;
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        await using (var stream = new FileStream(path, FileMode.CreateNew)) stream.SetLength(64L << 20);
        var result = await ExternalCommand.RunAsync("mkfs.ext4", ["-q", "-F", "-L", "kintsugi", path],
            cancellation: cancellation);
        if (!result.Succeeded)
        {
            File.Delete(path);
            throw new LabException($"mkfs.ext4 {path} failed: {result.StandardError.Trim()}", ExitCode.Environment);
        }
    }
}
