using Kintsugi.Kernel;

namespace Kintsugi.Core.Tests;

/// <summary>Reading module files before loading: what is refused, with real gcc output as input.</summary>
public sealed class ModuleFileSpecification
{
    [Fact]
    public void A_text_file_is_refused_as_not_elf()
    {
        var path = Path.GetTempFileName();
        File.WriteAllText(path, "hello");
        try
        {
            Assert.Contains("not an ELF file",
            Assert.Throws<ModuleFileException>(() => ModuleFile.Read(path)).Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public async Task A_plain_object_file_is_refused_as_not_a_module()
    {
        var directory = Directory.CreateTempSubdirectory("kintsugi-mod-").FullName;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(directory, "x.c"), "int x(void) { return 1; }\n");
            Assert.True((await ExternalCommand.RunAsync("gcc-12", ["-c", "-o", "x.o", "x.c"], directory)).Succeeded);
            var error = Assert.Throws<ModuleFileException>(() => ModuleFile.Read(Path.Combine(directory, "x.o")));
            Assert.Contains("no .gnu.linkonce.this_module", error.Message);
        }
        finally { Directory.Delete(directory, true); }
    }

    [Fact]
    public void A_missing_file_is_named()
    {
        var error = Assert.Throws<ModuleFileException>(() => ModuleFile.Read("/nonexistent/patch.ko"));
        Assert.Contains("/nonexistent/patch.ko", error.Message);
    }
}
