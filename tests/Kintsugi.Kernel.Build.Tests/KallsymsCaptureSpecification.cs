using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>The one lab boot that reads a kernel's symbol table says nothing about the fix when it does not
/// finish.</summary>
[Collection("6.1 cloud kernel")]
public sealed class KallsymsCaptureSpecification
{
    [Fact]
    public async Task A_symbol_table_boot_that_does_not_finish_stops_the_build_as_interrupted_not_refusing_the_fix()
    {
        var release = TestKernels.Debian12Cloud61;
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        var lab = new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { });
        using var directory = new TemporaryDirectory();

        // No emulated kernel boots and lists its symbols within a second: the boot times out, as under a heavy load.
        var stopped = await Assert.ThrowsAsync<BuildInterruptedException>(() =>
            KallsymsCapture.LoadAsync(() => lab, release, directory.Path, _ => { }, bound: TimeSpan.FromSeconds(1)));

        Assert.Equal(ExitCode.Environment, stopped.ExitCode);
        Assert.Contains("timed out after", stopped.Message, StringComparison.Ordinal);
        Assert.Contains("run the same command again", stopped.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(directory.Path, "kallsyms")));
    }
}
