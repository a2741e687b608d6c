using Kintsugi.Kernel;

namespace Kintsugi.Core.Tests;

/// <summary>Reading module files before loading: what is refused, with real gcc output as input.</summary>
public sealed class ModuleFileSpecification
{
    [Fact]
    public void A_text_file_is_refused_as_not_elf()
    {
        using var directory = new TemporaryDirectory();
        File.WriteAllText(directory["hello.ko"], "hello");
        Assert.Contains("not an ELF file",
            Assert.Throws<ModuleFileException>(() => ModuleFile.Read(directory["hello.ko"])).Message);
    }

    [Fact]
    public async Task A_plain_object_file_is_refused_as_not_a_module()
    {
        using var directory = new TemporaryDirectory();
        await File.WriteAllTextAsync(directory["x.c"], "int x(void) { return 1; }\n");
        Assert.True((await ExternalCommand.RunAsync("gcc-12", ["-c", "-o", "x.o", "x.c"], directory.Path)).Succeeded);
        var error = Assert.Throws<ModuleFileException>(() => ModuleFile.Read(directory["x.o"]));
        Assert.Contains("no .gnu.linkonce.this_module", error.Message);
    }

    [Fact]
    public void A_missing_file_is_named()
    {
        var error = Assert.Throws<ModuleFileException>(() => ModuleFile.Read("/nonexistent/patch.ko"));
        Assert.Contains("/nonexistent/patch.ko", error.Message);
    }
}
