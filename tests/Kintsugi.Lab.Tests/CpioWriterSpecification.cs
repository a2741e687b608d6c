using Kintsugi.Testing;

namespace Kintsugi.Lab.Tests;

/// <summary>The initramfs writer, checked by the real cpio tool.</summary>
public sealed class CpioWriterSpecification
{
    [Fact]
    public async Task Cpio_extracts_files_symlinks_and_directories_as_written()
    {
        using var directory = new TemporaryDirectory();
        var archive = directory["initramfs.cpio"];
        var target = Directory.CreateDirectory(directory["extracted"]).FullName;
        await using (var stream = File.Create(archive))
        {
            var writer = new CpioWriter(stream);
            writer.File("etc/deep/file.txt", "contents\n"u8);
            writer.File("bin/tool", "#!/bin/sh\n"u8, 0x1ED);
            writer.Symlink("bin/alias", "tool");
            writer.Directory("empty");
            writer.Finish();
        }
        var result = await ExternalCommand.RunAsync("sh",
            ["-c", "cpio -idm --no-absolute-filenames < \"$1\"", "sh", archive], target);
        Assert.True(result.Succeeded, result.StandardError);
        Assert.Equal("contents\n", await File.ReadAllTextAsync(Path.Combine(target, "etc/deep/file.txt")));
        Assert.Equal("tool", new FileInfo(Path.Combine(target, "bin/alias")).LinkTarget);
        Assert.True((File.GetUnixFileMode(Path.Combine(target, "bin/tool")) & UnixFileMode.UserExecute) != 0);
        Assert.True(Directory.Exists(Path.Combine(target, "empty")));
    }
}
