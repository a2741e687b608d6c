using Kintsugi.Elf;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Lab;

namespace Kintsugi.Kernel.Build;

/// <summary>
/// The exact kernel a livepatch is built for, and everything the builder needs from it: a prepared source
/// tree, where modules are linked against it, its exports, and its shipped code and symbols (the oracle of
/// the fidelity proof and of sympos).
/// </summary>
public abstract class BuildTarget
{
    public abstract KernelTarget Target { get; }

    /// <summary>Where per-kernel results are kept between builds (pristine objects, compatibility headers).</summary>
    public abstract string CacheDirectory { get; }

    public abstract Task<KernelSourceTree> PrepareAsync(Action<string> progress, CancellationToken cancellation);

    /// <summary>The kbuild tree modules are linked against (<c>make -C DIR M=...</c>).</summary>
    public abstract string ModuleBuildDirectory { get; }

    public abstract ModuleSymvers LoadExports();

    private readonly SemaphoreSlim _shippedGate = new(1, 1);
    private ShippedObject? _vmlinux;
    private readonly Dictionary<string, ShippedObject> _modules = new(StringComparer.Ordinal);

    /// <summary>The shipped vmlinux, read once per target: a catch-up resolves hundreds of files against it, and each
    /// read decompresses the image and parses the whole symbol table.</summary>
    public async Task<ShippedObject> VmlinuxAsync(Action<string> progress, CancellationToken cancellation)
    {
        await _shippedGate.WaitAsync(cancellation);
        try
        {
            return _vmlinux ??= await ReadVmlinuxAsync(progress, cancellation);
        }
        finally { _shippedGate.Release(); }
    }

    /// <summary>The shipped module <paramref name="name"/> (kernel spelling, '_' for '-'), read once per
    /// target.</summary>
    public async Task<ShippedObject> ModuleAsync(string name, CancellationToken cancellation)
    {
        await _shippedGate.WaitAsync(cancellation);
        try
        {
            if (!_modules.TryGetValue(name, out var module))
                _modules[name] = module = await ReadModuleAsync(name, cancellation);
            return module;
        }
        finally { _shippedGate.Release(); }
    }

    protected abstract Task<ShippedObject> ReadVmlinuxAsync(Action<string> progress, CancellationToken cancellation);

    protected abstract Task<ShippedObject> ReadModuleAsync(string name, CancellationToken cancellation);

    protected static async Task<ShippedObject> ReadModuleFileAsync(string modulesDirectory, string name, string kernel,
        CancellationToken cancellation)
    {
        var file = Directory.Exists(modulesDirectory)
            ? Directory.EnumerateFiles(modulesDirectory, "*.ko*", SearchOption.AllDirectories)
            .FirstOrDefault(f => KernelObjectNames.ModuleOf(f) == name)
            : null;
        if (file is null)
            throw new ModuleBuildException($"{kernel} ships no module {name} (looked in {modulesDirectory}): the " +
                $"patched unit belongs to a module this kernel does not have");
        if (!file.EndsWith(".xz", StringComparison.Ordinal)) return new ShippedModule(name, ElfObject.Load(file));
        // 6.12 ships its modules xz-compressed.
        var directory = Directory.CreateTempSubdirectory("kintsugi-module-");
        try
        {
            var copy = Path.Combine(directory.FullName, Path.GetFileName(file));
            File.Copy(file, copy);
            var result = await ExternalCommand.RunAsync("xz", ["-d", copy], cancellation: cancellation);
            if (!result.Succeeded)
                throw new ModuleBuildException($"decompressing {file} failed: {result.StandardError.Trim()}");
            return new ShippedModule(name, ElfObject.Load(copy[..^3]));
        }
        finally { directory.Delete(recursive: true); }
    }
}

/// <summary>A Debian kernel from the archive: image, headers and linux-source of its exact version, fetched into the
/// cache.</summary>
public sealed class DebianBuildTarget : BuildTarget
{
    private readonly DebianKernelArchive _archive;
    private readonly FetchedKernel _kernel;
    private readonly Func<LabMachine> _lab;

    private DebianBuildTarget(DebianKernelArchive archive, FetchedKernel kernel, Func<LabMachine> lab)
    {
        _archive = archive;
        _kernel = kernel;
        _lab = lab;
    }

    public static async Task<DebianBuildTarget> FetchAsync(DebianKernelArchive archive, KernelRelease release,
        Func<LabMachine> lab, CancellationToken cancellation) =>
        new(archive, await archive.FetchAsync(release, KernelParts.Image | KernelParts.Headers | KernelParts.Source,
            cancellation), lab);

    public override KernelTarget Target => _kernel.Target;
    public override string CacheDirectory => _archive.KernelDirectory(_kernel.Target.Release);
    public override string ModuleBuildDirectory => _kernel.HeadersDirectory;

    public override Task<KernelSourceTree> PrepareAsync(Action<string> progress, CancellationToken cancellation) =>
        KernelSourceTree.PrepareAsync(_kernel, progress, cancellation);

    public override ModuleSymvers LoadExports() =>
        ModuleSymvers.Load(Path.Combine(_kernel.HeadersDirectory, "Module.symvers"));

    /// <summary>Code from the vmlinux inside the image, symbols from its kallsyms tables (or, when they cannot be read,
    /// from /proc/kallsyms of one lab boot), cached: no debug package.</summary>
    protected override async Task<ShippedObject> ReadVmlinuxAsync(Action<string> progress,
        CancellationToken cancellation)
    {
        var image = VmlinuxImage.Parse(await KernelImage.ReadVmlinuxAsync(_kernel.Vmlinuz, cancellation));
        var symbols = await KallsymsCapture.LoadAsync(_lab, _kernel.Target.Release, CacheDirectory, image, progress,
            cancellation);
        return new ShippedVmlinux(symbols, image);
    }

    protected override Task<ShippedObject> ReadModuleAsync(string name, CancellationToken cancellation) =>
        ReadModuleFileAsync(_kernel.ModulesDirectory, name, _kernel.Target.Release.Value, cancellation);
}

/// <summary>
/// Any other distribution's kernel, described by a directory (docs/cli.md): <c>source/</c>, its source tree
/// configured and prepared as the distribution built it (<c>.config</c>, <c>make prepare modules_prepare</c>,
/// <c>Module.symvers</c>); <c>System.map</c>; <c>vmlinux</c> (the ELF, stripped or not) or <c>vmlinuz</c>;
/// and <c>modules/</c>, the shipped modules at any depth. The tree is used as it is and never written to.
/// </summary>
public sealed class DirectoryBuildTarget : BuildTarget
{
    private readonly string _directory;
    private readonly string _source;
    private readonly Toolchains.Toolchain _toolchain;

    private DirectoryBuildTarget(string directory, KernelTarget target, Toolchains.Toolchain toolchain)
    {
        _directory = directory;
        _source = Path.Combine(directory, "source");
        Target = target;
        _toolchain = toolchain;
    }

    public static async Task<DirectoryBuildTarget> OpenAsync(string directory, CancellationToken cancellation)
    {
        directory = Path.GetFullPath(directory);
        var source = Path.Combine(directory, "source");
        foreach (var required in new[] { Path.Combine(source, ".config"), Path.Combine(source, "include", "config",
            "kernel.release"), Path.Combine(source, "Module.symvers"), Path.Combine(directory, "System.map") })
            if (!File.Exists(required))
                throw new ModuleBuildException(
                    $"the target directory {directory} lacks {Path.GetRelativePath(directory, required)}; it needs " +
                    $"source/ (configured, `make prepare modules_prepare` done, Module.symvers), System.map, vmlinux " +
                    $"or vmlinuz, and modules/", exitCode: ExitCode.Usage);
        // Debian and Ubuntu install a one-line placeholder as /boot/System.map; only the -dbg package has the real one.
        var systemMap = Path.Combine(directory, "System.map");
        var lines = File.ReadLines(systemMap).Take(1000).Count();
        if (lines < 1000)
            throw new ModuleBuildException($"{systemMap} holds {lines} line(s), not a kernel's symbol table (some " +
                $"distributions install a placeholder and ship the real one in a debug package); " +
                "give the real System.map, or /proc/kallsyms read as root on the target kernel booted with nokaslr",
                exitCode: ExitCode.Usage);
        // Refused before anything else is read: a tree of another compiler cannot give a faithful patch here.
        var toolchain = await Toolchains.ToolchainSelection.ForDirectoryAsync(source, cancellation);
        var release = KernelRelease.TryParse((await File.ReadAllTextAsync(
            Path.Combine(source, "include", "config", "kernel.release"), cancellation)).Trim(), out var parsed)
            ? parsed
            : throw new ModuleBuildException($"{source}/include/config/kernel.release does not hold a kernel release");
        var vmlinux = await ReadVmlinuxImageAsync(directory, cancellation);
        var buildId = ElfSectionTable.Read(vmlinux).FindBuildId()
            ?? throw new ModuleBuildException(
                $"the vmlinux of {directory} has no GNU build-id note, so nothing ties a patch to it");
        return new DirectoryBuildTarget(directory, new KernelTarget(release, null, buildId), toolchain);
    }

    public override KernelTarget Target { get; }
    public override string CacheDirectory => Path.Combine(_directory, ".kintsugi");
    public override string ModuleBuildDirectory => _source;

    public override Task<KernelSourceTree> PrepareAsync(Action<string> progress, CancellationToken cancellation) =>
        Task.FromResult(KernelSourceTree.Open(Target, _source, _toolchain));

    public override ModuleSymvers LoadExports() => ModuleSymvers.Load(Path.Combine(_source, "Module.symvers"));

    protected override async Task<ShippedObject> ReadVmlinuxAsync(Action<string> progress,
        CancellationToken cancellation)
    {
        var symbols = KernelSymbolTable.ParseKallsyms(await File.ReadAllTextAsync(
            Path.Combine(_directory, "System.map"), cancellation), SymbolTableSource.SystemMap);
        return new ShippedVmlinux(symbols, VmlinuxImage.Parse(await ReadVmlinuxImageAsync(_directory, cancellation)));
    }

    protected override Task<ShippedObject> ReadModuleAsync(string name, CancellationToken cancellation) =>
        ReadModuleFileAsync(Path.Combine(_directory, "modules"), name, Target.Release.Value, cancellation);

    private static async Task<byte[]> ReadVmlinuxImageAsync(string directory, CancellationToken cancellation)
    {
        var vmlinux = Path.Combine(directory, "vmlinux");
        if (File.Exists(vmlinux)) return await File.ReadAllBytesAsync(vmlinux, cancellation);
        var vmlinuz = Path.Combine(directory, "vmlinuz");
        if (File.Exists(vmlinuz)) return await KernelImage.ReadVmlinuxAsync(vmlinuz, cancellation);
        throw new ModuleBuildException($"the target directory {directory} has neither vmlinux nor vmlinuz",
            exitCode: ExitCode.Usage);
    }
}
