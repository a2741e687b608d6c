using System.Security.Cryptography;
using System.Text;
using Kintsugi.Kernel.Archive;

namespace Kintsugi.Lab;

/// <summary>A file copied from the host into the guest.</summary>
public sealed record GuestFile(string HostPath, string GuestPath)
{
    /// <summary>Parses HOSTPATH:GUESTPATH.</summary>
    public static GuestFile Parse(string text)
    {
        var colon = text.LastIndexOf(':');
        if (colon <= 0 || colon == text.Length - 1 || text[colon + 1] != '/')
            throw new LabException($"'{text}' is not HOSTPATH:GUESTPATH (the guest path must be absolute)",
                ExitCode.Usage);
        return new GuestFile(text[..colon], text[(colon + 1)..]);
    }
}

/// <summary>
/// Builds a guest's initramfs in two parts the kernel unpacks one after the other: a base per kernel and
/// guest binary (busybox, kernel modules, the kintsugi binary and its libraries), cached, and a small
/// per-run part (the command and added files).
/// </summary>
public sealed class GuestImage(string cacheRoot, Action<string> progress)
{
    /// <summary>Modules the guest needs from the kernel's own package: PCI virtio transport, network and
    /// disk.</summary>
    public static readonly string[] GuestModules = ["virtio_pci", "virtio_net", "virtio_blk"];

    /// <param name="systemdRoot">The guest boots a root disk with systemd: files go onto that disk, not into the
    /// initramfs.</param>
    public async Task<string> BuildAsync(FetchedKernel kernel, string guestBinary, string command, bool interactive,
        IReadOnlyList<GuestFile> files, string workDirectory, CancellationToken cancellation, bool systemdRoot = false)
    {
        var basePath = await BaseArchiveAsync(kernel, guestBinary, cancellation);
        var initrd = Path.Combine(workDirectory, "initrd.cpio");
        File.Copy(basePath, initrd, overwrite: true);
        await using var stream = new FileStream(initrd, FileMode.Append);
        var cpio = new CpioWriter(stream);
        cpio.File("lab/command", Encoding.UTF8.GetBytes(command + "\n"), 0x1ED);
        if (interactive) cpio.File("lab/interactive", []);
        if (systemdRoot) cpio.File("lab/systemd", []);
        foreach (var file in files)
        {
            if (!File.Exists(file.HostPath))
                throw new LabException($"--add: {file.HostPath} does not exist", ExitCode.Usage);
            var executable = (File.GetUnixFileMode(file.HostPath) & UnixFileMode.UserExecute) != 0;
            cpio.File((systemdRoot ? "lab/root/" : "") + file.GuestPath.TrimStart('/'),
                await File.ReadAllBytesAsync(file.HostPath, cancellation), executable ? 0x1ED : 0x1A4);
        }
        cpio.Finish();
        return initrd;
    }

    private async Task<string>
        BaseArchiveAsync(FetchedKernel kernel, string guestBinary, CancellationToken cancellation)
    {
        var init = InitScript();
        var busybox = FindBusybox();
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\n",
            kernel.Target.BuildId.ToString(), init, FileStamp(guestBinary), FileStamp(busybox),
            string.Join(",", GuestModules)))))[..16];
        var directory = Path.Combine(cacheRoot, "lab", kernel.Target.Release.Value);
        var path = Path.Combine(directory, $"base-{key}.cpio");
        if (File.Exists(path)) return path;
        Directory.CreateDirectory(directory);
        progress($"building the guest base image for {kernel.Target.Release}");

        // Unique per writer: one process may boot several guests of one kernel at once (catch-up's trials).
        var temporary = $"{path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        await using (var stream = new FileStream(temporary, FileMode.Create))
        {
            var cpio = new CpioWriter(stream);
            foreach (var dir in new[] { "dev", "proc", "sys", "tmp", "run", "root", "etc", "var/lib", "bin", "sbin",
                "usr/bin", "usr/sbin", "lib64" })
                cpio.Directory(dir);
            cpio.CharacterDevice("dev/console", 5, 1);
            cpio.CharacterDevice("dev/null", 1, 3, 0x1B6);
            cpio.File("init", Encoding.UTF8.GetBytes(init), 0x1ED);
            cpio.File("bin/busybox", await File.ReadAllBytesAsync(busybox, cancellation), 0x1ED);
            foreach (var applet in await BusyboxAppletsAsync(busybox, cancellation))
                cpio.Symlink(applet, "/bin/busybox");
            cpio.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"u8);
            cpio.File("etc/group", "root:x:0:\n"u8);

            cpio.File("bin/kintsugi", await File.ReadAllBytesAsync(guestBinary, cancellation), 0x1ED);
            foreach (var library in await SharedLibrariesAsync(guestBinary, cancellation))
                cpio.File(library.TrimStart('/'), await File.ReadAllBytesAsync(library, cancellation), 0x1ED);

            var closure = new KernelModuleClosure(kernel.ModulesDirectory);
            var names = new StringBuilder();
            foreach (var relative in closure.Resolve(GuestModules))
            {
                var name = KernelModuleClosure.NameOf(relative) + ".ko";
                cpio.File("lib/modules/lab/" + name,
                    await ReadModuleAsync(Path.Combine(kernel.ModulesDirectory, relative), cancellation));
                names.Append(name).Append('\n');
            }
            cpio.File("lab/modules", Encoding.UTF8.GetBytes(names.ToString()));
            cpio.Finish();
        }
        File.Move(temporary, path, overwrite: true);
        return path;
    }

    public static string InitScript()
    {
        using var stream = typeof(GuestImage).Assembly.GetManifestResourceStream("guest-init.sh")!;
        return new StreamReader(stream).ReadToEnd();
    }

    private static string FileStamp(string path)
    {
        var info = new FileInfo(path);
        return $"{info.FullName}:{info.Length}:{info.LastWriteTimeUtc.Ticks}";
    }

    private static string FindBusybox()
    {
        // The guest has no libc of its own for busybox: only the static build works.
        foreach (var candidate in new[] { "/bin/busybox", "/usr/bin/busybox" })
            if (File.Exists(candidate) && ExternalCommand.Run("file", "-b", candidate) is var r
                && (r.ExitCode != 0 || r.StandardOutput.Contains("static", StringComparison.Ordinal)))
                return candidate;
        throw new LabException("a static busybox is needed for the guest: apt-get install busybox-static",
            ExitCode.Environment);
    }

    private static async Task<IReadOnlyList<string>> BusyboxAppletsAsync(string busybox, CancellationToken cancellation)
    {
        var result = await ExternalCommand.RunAsync(busybox, ["--list-full"], cancellation: cancellation);
        if (!result.Succeeded) throw new LabException($"{busybox} --list-full failed", ExitCode.Environment);
        return result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(a => a != "bin/busybox").ToList();
    }

    /// <summary>The guest binary's shared libraries (as ldd finds them), plus OpenSSL, which .NET loads at run time for
    /// hashing and signatures.</summary>
    private static async Task<IReadOnlyList<string>> SharedLibrariesAsync(string binary, CancellationToken cancellation)
    {
        var result = await ExternalCommand.RunAsync("ldd", [binary], cancellation: cancellation);
        var libraries = new List<string>();
        foreach (var line in result.StandardOutput.Split('\n'))
        {
            foreach (var word in line.Split(' ',
                StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                if (word.StartsWith('/') && File.Exists(word)) libraries.Add(word);
        }
        foreach (var name in new[] { "libssl.so.3", "libcrypto.so.3" })
        {
            var path = Path.Combine("/usr/lib/x86_64-linux-gnu", name);
            if (File.Exists(path)) libraries.Add(path);
        }
        return libraries.Distinct().ToList();
    }

    private static async Task<byte[]> ReadModuleAsync(string path, CancellationToken cancellation)
    {
        if (!path.EndsWith(".xz", StringComparison.Ordinal) && !path.EndsWith(".zst", StringComparison.Ordinal))
            return await File.ReadAllBytesAsync(path, cancellation);
        // busybox insmod cannot decompress: unpack distribution modules on the host.
        var tool = path.EndsWith(".xz", StringComparison.Ordinal) ? "xz" : "zstd";
        var output = Path.GetTempFileName();
        try
        {
            var result = await ExternalCommand.RunAsync("sh", ["-c", $"{tool} -dc \"$1\" > \"$2\"", "sh", path, output],
                cancellation: cancellation);
            if (!result.Succeeded) throw new LabException($"cannot decompress {path}: {result.StandardError.Trim()}",
                ExitCode.Environment);
            return await File.ReadAllBytesAsync(output, cancellation);
        }
        finally { File.Delete(output); }
    }
}
