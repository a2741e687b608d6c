using System.Collections.Concurrent;
using System.Diagnostics;
using Xunit.Abstractions;

namespace Kintsugi.Elf.Tests;

/// <summary>Real kernel modules from the kernel cache, where this machine has one.</summary>
public class KernelModuleSpecification(ITestOutputHelper output)
{
    private const string KernelCache = "/var/cache/kintsugi/kernels";

    [Fact]
    public void Every_cached_kernel_module_round_trips_byte_identical()
    {
        if (!Directory.Exists(KernelCache))
        {
            output.WriteLine($"checked 0 modules: {KernelCache} does not exist");
            return;
        }

        var modules = Directory.EnumerateFiles(KernelCache, "*.ko",
            new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true }).ToList();
        var failures = new ConcurrentBag<string>();
        long bytes = 0;
        var clock = Stopwatch.StartNew();
        Parallel.ForEach(modules, new ParallelOptions { MaxDegreeOfParallelism = 2 }, path =>
        {
            byte[] original = File.ReadAllBytes(path);
            Interlocked.Add(ref bytes, original.Length);
            try
            {
                if (!ElfReader.Read(original).ToArray().AsSpan().SequenceEqual(original))
                {
                    failures.Add($"{path}: differs");
                }
            }
            catch (ElfFormatException e)
            {
                failures.Add($"{path}: {e.Message}");
            }
        });

        output.WriteLine(
            $"checked {modules.Count} modules ({bytes / (1 << 20)} MiB) in {clock.ElapsedMilliseconds} ms");
        Assert.Empty(failures.Take(20));
    }
}
