using System.Diagnostics;
using Kintsugi;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Symbols;

// decode RELEASE RUNS: fetches the kernel's image (shared cache), decompresses the vmlinux once, decodes its kallsyms
// tables RUNS times in-process, and compares the table with the one a lab boot captured, when the cache holds one.
// Prints one markdown table row.
if (args is not ["decode", var name, var runsText] || !int.TryParse(runsText, out var runs) || runs < 1)
{
    Console.Error.WriteLine("usage: decode RELEASE RUNS");
    return 2;
}
var release = KernelRelease.Parse(name);
var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot, Console.Error.WriteLine);
var kernel = await archive.FetchAsync(release, KernelParts.Image);

var clock = Stopwatch.StartNew();
var vmlinux = await KernelImage.ReadVmlinuxAsync(kernel.Vmlinuz);
var decompress = clock.Elapsed;
var image = VmlinuxImage.Parse(vmlinux);

// Wall time depends on the machine's load; the process's CPU time much less.
ImageKallsyms? decoded = null;
var times = new List<TimeSpan>();
var cpu = new List<TimeSpan>();
for (var run = 0; run < runs; run++)
{
    var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
    clock.Restart();
    decoded = ImageKallsyms.Read(image);
    times.Add(clock.Elapsed);
    cpu.Add(Process.GetCurrentProcess().TotalProcessorTime - cpuBefore);
}
var first = times[0];
times.Sort();
cpu.Sort();
var median = times[times.Count / 2];

string comparison;
var booted = Path.Combine(archive.KernelDirectory(release), KallsymsCapture.BootedFileName);
if (!File.Exists(booted)) comparison = "no boot captured";
else
{
    clock.Restart();
    var boot = KernelSymbolTable.ParseKallsyms(await File.ReadAllTextAsync(booted), SymbolTableSource.LabKallsyms);
    var parse = clock.Elapsed;
    var (mine, theirs) = (decoded!.Symbols.Symbols, boot.Symbols);
    var difference = Enumerable.Range(0, Math.Min(mine.Count, theirs.Count)).FirstOrDefault(i => mine[i] != theirs[i],
        -1);
    comparison = difference < 0 && mine.Count == theirs.Count
        ? $"equal ({theirs.Count} symbols; parsing the boot's cached text: {parse.TotalMilliseconds:F0} ms)"
        : difference < 0 ? $"DIFFERENT: {mine.Count} symbols decoded, {theirs.Count} booted"
        : $"DIFFERENT at {difference}: decoded {mine[difference]}, booted {theirs[difference]}";
}
var layout = decoded!.Layout;
Console.WriteLine($"| {release} | {layout.SymbolCount} | {(layout.SeqsOfNames is null ? "no" : "yes")} | " +
    $"{decompress.TotalMilliseconds:F0} | {first.TotalMilliseconds:F0} | {median.TotalMilliseconds:F0} | " +
    $"{cpu[cpu.Count / 2].TotalMilliseconds:F0} | " +
    $"{comparison} |");
return 0;
