using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>A kernel's symbol table is read from its image and cached, without booting; a lab boot reads it only
/// when the image's tables cannot be read, and says nothing about the fix when it does not finish.</summary>
[Collection("6.1 cloud kernel")]
public sealed class KallsymsCaptureSpecification
{
    private static readonly KernelRelease Release = TestKernels.Debian12Cloud61;
    private readonly DebianKernelArchive _archive = new(DebianKernelArchive.DefaultCacheRoot);

    private LabMachine Lab() =>
        new(_archive, DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { });

    private async Task<byte[]> VmlinuxAsync() =>
        await KernelImage.ReadVmlinuxAsync((await _archive.FetchAsync(Release, KernelParts.Image)).Vmlinuz);

    [Fact]
    public async Task The_symbol_table_is_read_from_the_image_without_a_boot_and_cached_in_the_kallsyms_format()
    {
        using var directory = new TemporaryDirectory();
        var image = VmlinuxImage.Parse(await VmlinuxAsync());
        Func<LabMachine> noBoot = () => throw new InvalidOperationException("the image's tables were not read");

        var table = await KallsymsCapture.LoadAsync(noBoot, Release, directory.Path, image, _ => { });
        var again = await KallsymsCapture.LoadAsync(noBoot, Release, directory.Path, image, _ => { });

        Assert.Equal(SymbolTableSource.ImageKallsyms, table.Source);
        Assert.Equal(table.Symbols, again.Symbols);
        Assert.Equal(table.Symbols, KernelSymbolTable.ParseKallsyms(await File.ReadAllTextAsync(
            Path.Combine(directory.Path, KallsymsCapture.DecodedFileName)), SymbolTableSource.ImageKallsyms).Symbols);
        Assert.False(File.Exists(Path.Combine(directory.Path, KallsymsCapture.BootedFileName)));
    }

    [Fact]
    public async Task An_image_whose_tables_cannot_be_read_falls_back_to_the_lab_boot_saying_why()
    {
        using var directory = new TemporaryDirectory();
        var vmlinux = await VmlinuxAsync();
        var layout = ImageKallsyms.Read(VmlinuxImage.Parse(vmlinux)).Layout;
        vmlinux.AsSpan(layout.TokenTable..layout.TokenIndex).Clear();
        var progress = new List<string>();

        // The fallback boot is bounded to a second, so it times out: what matters is that it was tried.
        await Assert.ThrowsAsync<BuildInterruptedException>(() => KallsymsCapture.LoadAsync(Lab, Release,
            directory.Path, VmlinuxImage.Parse(vmlinux), progress.Add, bound: TimeSpan.FromSeconds(1)));

        Assert.Contains(progress, p => p.Contains("cannot be read from its image (no kallsyms token table",
            StringComparison.Ordinal) && p.EndsWith("reading it from a lab boot instead", StringComparison.Ordinal));
        Assert.False(File.Exists(Path.Combine(directory.Path, KallsymsCapture.DecodedFileName)));
    }

    [Fact]
    public async Task A_symbol_table_boot_that_does_not_finish_stops_the_build_as_interrupted_not_refusing_the_fix()
    {
        using var directory = new TemporaryDirectory();

        // No emulated kernel boots and lists its symbols within a second: the boot times out, as under a heavy load.
        var stopped = await Assert.ThrowsAsync<BuildInterruptedException>(() =>
            KallsymsCapture.BootAsync(Lab, Release, directory.Path, _ => { }, bound: TimeSpan.FromSeconds(1)));

        Assert.Equal(ExitCode.Environment, stopped.ExitCode);
        Assert.Contains("timed out after", stopped.Message, StringComparison.Ordinal);
        Assert.Contains("run the same command again", stopped.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(directory.Path, KallsymsCapture.BootedFileName)));
    }
}
