using Kintsugi.Kernel.Build;

namespace Kintsugi.Kernel.CatchUp.Tests;

/// <summary>The difference of linux-source-6.1 6.1.176-1 → 6.1.187-1, split into per-file fixes.</summary>
public sealed class SourceDifferenceSpecification
{
    [Fact]
    public async Task Every_changed_text_file_has_its_own_patch_that_changes_that_file_only()
    {
        var difference = await RealDebianData.DifferenceAsync();

        Assert.True(difference.Files.Count > 100, $"{difference.Files.Count} changed files");
        foreach (var file in difference.Files.Where(f => f.Patch is not null))
        {
            var patch = SourcePatch.Read(difference.PatchPath(file));
            Assert.Equal(file.Path, Assert.Single(patch.Files).Path);
            Assert.Equal(file.PatchSha256, patch.Sha256);
        }
    }

    [Fact]
    public async Task A_changed_c_file_names_the_functions_its_change_touches()
    {
        var difference = await RealDebianData.DifferenceAsync();

        var bcm = difference.Files.Single(f => f.Path == "net/can/bcm.c");

        Assert.Equal(FileChangeKind.Modified, bcm.Kind);
        Assert.Contains("bcm_rx_setup", bcm.Functions);
    }

    [Fact]
    public async Task A_file_patch_applies_to_the_older_source_and_gives_the_newer()
    {
        var difference = await RealDebianData.DifferenceAsync();
        var bcm = difference.Files.Single(f => f.Path == "net/can/bcm.c");
        using var directory = new Kintsugi.Testing.TemporaryDirectory();
        Directory.CreateDirectory(Path.Combine(directory.Path, "net", "can"));
        File.Copy(difference.OldText(bcm), Path.Combine(directory.Path, "net", "can", "bcm.c"));

        var result = await ExternalCommand.RunAsync("patch", ["-p1", "--batch", "-i", difference.PatchPath(bcm)],
            directory.Path);

        Assert.True(result.Succeeded, result.StandardOutput);
        Assert.Equal(File.ReadAllText(difference.NewText(bcm)),
            File.ReadAllText(Path.Combine(directory.Path, "net", "can", "bcm.c")));
    }

    [Fact]
    public async Task A_truncated_source_tarball_is_refused_as_damaged_not_reported_as_a_bug()
    {
        using var directory = new Kintsugi.Testing.TemporaryDirectory();
        var top = Path.Combine(directory.Path, "linux-source-6.1");
        Directory.CreateDirectory(top);
        // Incompressible content, so that half the tarball ends inside an entry's data.
        for (var i = 0; i < 4; i++)
            await File.WriteAllBytesAsync(Path.Combine(top, $"file{i}.c"),
                System.Security.Cryptography.RandomNumberGenerator.GetBytes(64 * 1024));
        var tarball = Path.Combine(directory.Path, "linux-source-6.1.tar.xz");
        var made = await ExternalCommand.RunAsync("tar",
            ["-cJf", tarball, "-C", directory.Path, "linux-source-6.1"]);
        Assert.True(made.Succeeded, made.StandardError);
        await using (var file = File.OpenWrite(tarball)) file.SetLength(file.Length / 2);

        var refused = await Assert.ThrowsAsync<CatchUpException>(() =>
            SourceDifference.ReadTarAsync(tarball, (_, _) => Task.CompletedTask, CancellationToken.None));

        Assert.Equal(ExitCode.InputRefused, refused.ExitCode);
        Assert.Contains($"{tarball} is damaged", refused.Message);
        Assert.Contains("run the same command again to download it afresh", refused.Message);
    }

    [Fact]
    public async Task A_second_computation_is_read_from_the_cache()
    {
        var first = await RealDebianData.DifferenceAsync();

        var again = await SourceDifference.ComputeAsync(
            await new Kintsugi.Kernel.Archive.LinuxSourceArchive(
                Kintsugi.Kernel.Archive.DebianKernelArchive.DefaultCacheRoot).FetchAsync(RealDebianData.From),
            await new Kintsugi.Kernel.Archive.LinuxSourceArchive(
                Kintsugi.Kernel.Archive.DebianKernelArchive.DefaultCacheRoot).FetchAsync(RealDebianData.To),
            Kintsugi.Kernel.Archive.DebianKernelArchive.DefaultCacheRoot,
            message => Assert.Fail($"computed again: {message}"));

        Assert.Equal(first.Files.Select(f => f.PatchSha256), again.Files.Select(f => f.PatchSha256));
    }
}
