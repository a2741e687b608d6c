using System.Buffers.Binary;
using System.Globalization;
using Kintsugi.Kernel.Archive;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// A prepared distribution source tree compiles one translation unit to the machine code the distribution
/// shipped. The oracle needs no debug package: the booted kernel (without KASLR) names the function's
/// address in /proc/kallsyms, and the vmlinux inside the image holds the shipped bytes there.
/// </summary>
public abstract class KernelSourceTreeSpecification(KernelRelease release)
{
    [Fact]
    public async Task A_compiled_function_equals_the_shipped_one_outside_relocation_sites()
    {
        const string function = "cmdline_proc_show";
        var cache = DebianKernelArchive.DefaultCacheRoot;
        var kernel = await new DebianKernelArchive(cache).FetchAsync(release, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        var tree = await KernelSourceTree.PrepareAsync(kernel);
        var objectFile = await tree.CompileAsync("fs/proc/cmdline.o");

        var (offset, size) = await SymbolAsync(objectFile, function);
        var relocated = await RelocationSitesAsync(objectFile, ".rela.text");
        var compiled = (await TextSectionAsync(objectFile)).AsSpan((int)offset, (int)size).ToArray();

        var lab = await KernelUnderTest.GetAsync(release);
        var run = await lab.RunAsync($"grep ' {function}$' /proc/kallsyms", [], kernelArguments: ["nokaslr"]);
        Assert.Equal(0, run.ExitCode);
        var address = ulong.Parse(run.Output.Trim().Split(' ')[0], NumberStyles.HexNumber);
        var shipped = BytesAt(await KernelImage.ReadVmlinuxAsync(kernel.Vmlinuz), address, compiled.Length);

        var compared = 0;
        for (var i = 0; i < compiled.Length; i++)
        {
            if (relocated.Any(r => offset + (ulong)i >= r.Offset && offset + (ulong)i < r.Offset + r.Length)) continue;
            Assert.True(compiled[i] == shipped[i], $"{function}+0x{i:x}: compiled {compiled[i]:x2}, shipped {shipped[i]:x2}");
            compared++;
        }
        Assert.True(compared > compiled.Length / 2, $"only {compared} of {compiled.Length} bytes were outside relocation sites");
    }

    private static async Task<(ulong Offset, ulong Size)> SymbolAsync(string objectFile, string name)
    {
        var symbols = await ExternalCommand.RunAsync("readelf", ["-sW", objectFile]);
        var line = symbols.StandardOutput.Split('\n').Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Single(f => f.Length >= 8 && f[7] == name && f[3] == "FUNC");
        return (ulong.Parse(line[1], NumberStyles.HexNumber), ulong.Parse(line[2]));
    }

    private static async Task<List<(ulong Offset, ulong Length)>> RelocationSitesAsync(string objectFile, string section)
    {
        var output = (await ExternalCommand.RunAsync("readelf", ["-rW", objectFile])).StandardOutput;
        var start = output.IndexOf($"'{section}'", StringComparison.Ordinal);
        Assert.True(start >= 0, $"no {section} in {objectFile}");
        var sites = new List<(ulong, ulong)>();
        foreach (var line in output[start..].Split('\n').Skip(2))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 3 || !ulong.TryParse(fields[0], NumberStyles.HexNumber, null, out var at)) break;
            sites.Add((at, fields[2] is "R_X86_64_64" ? 8UL : 4UL));
        }
        return sites;
    }

    private static async Task<byte[]> TextSectionAsync(string objectFile)
    {
        var copy = Path.GetTempFileName();
        try
        {
            Assert.True((await ExternalCommand.RunAsync("objcopy", ["-O", "binary", "--only-section=.text", objectFile, copy])).Succeeded);
            return await File.ReadAllBytesAsync(copy);
        }
        finally { File.Delete(copy); }
    }

    /// <summary>The bytes at a virtual address of an ELF executable, through its PT_LOAD program headers.</summary>
    private static byte[] BytesAt(byte[] elf, ulong address, int length)
    {
        var headers = BinaryPrimitives.ReadUInt64LittleEndian(elf.AsSpan(0x20));
        var count = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(0x38));
        for (var i = 0; i < count; i++)
        {
            var header = elf.AsSpan((int)headers + i * 56, 56);
            if (BinaryPrimitives.ReadUInt32LittleEndian(header) != 1) continue; // PT_LOAD
            var fileOffset = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
            var virtualAddress = BinaryPrimitives.ReadUInt64LittleEndian(header[16..]);
            var fileSize = BinaryPrimitives.ReadUInt64LittleEndian(header[32..]);
            if (address >= virtualAddress && address + (ulong)length <= virtualAddress + fileSize)
                return elf.AsSpan((int)(fileOffset + address - virtualAddress), length).ToArray();
        }
        throw new Xunit.Sdk.XunitException($"0x{address:x} is in no PT_LOAD segment of the image's vmlinux");
    }
}

[Collection("6.1 cloud kernel")]
public sealed class KernelSourceTreeOn61CloudKernel() : KernelSourceTreeSpecification(TestKernels.Debian12Cloud61);

[Collection("6.12 cloud kernel")]
public sealed class KernelSourceTreeOn612CloudKernel() : KernelSourceTreeSpecification(TestKernels.Debian12Cloud612);

/// <summary>kintsugi kernel prepare, through the real command line.</summary>
[Collection("6.1 cloud kernel")]
public sealed class KernelPrepareCommandSpecification
{
    [Fact]
    public async Task Prepare_reports_a_tree_configured_exactly_as_the_distribution_built_it()
    {
        var result = await ExternalCommand.RunAsync(Repository.KintsugiBinary, ["kernel", "prepare", TestKernels.Debian12Cloud61.Value, "--json"]);
        Assert.True(result.Succeeded, result.StandardError);
        using var json = System.Text.Json.JsonDocument.Parse(result.StandardOutput);
        var directory = json.RootElement.GetProperty("directory").GetString()!;
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot).FetchAsync(TestKernels.Debian12Cloud61, KernelParts.Image | KernelParts.Headers);
        Assert.Equal(kernel.Target.BuildId.ToString(), json.RootElement.GetProperty("buildId").GetString());
        Assert.Equal(await File.ReadAllTextAsync(Path.Combine(kernel.HeadersDirectory, ".config")), await File.ReadAllTextAsync(Path.Combine(directory, ".config")));
        // What modules built from this tree record as their vermagic release.
        Assert.Contains($"#define UTS_RELEASE \"{TestKernels.Debian12Cloud61}\"", await File.ReadAllTextAsync(Path.Combine(directory, "include", "generated", "utsrelease.h")));
    }
}
