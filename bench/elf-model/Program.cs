using System.Buffers.Binary;
using System.Diagnostics;

// Kintsugi.Elf beside LibObjectFile and ELFSharp on the same relocatable objects (arguments: files or directories of
// .o):
//  - fidelity: does an unmodified object read and written come back byte for byte;
//  - speed: median of 5 reads and of 5 writes (ELFSharp: read and enumerate the symbols; it cannot write);
//  - malformed input: truncations and random header bytes of each object, counted by how each library ends.
var files = args.SelectMany(a => Directory.Exists(a) ? Directory.GetFiles(a, "*.o", SearchOption.AllDirectories) : [a])
    .Order().ToList();
var outcomes = new Dictionary<string, Dictionary<string,
    int>>
{ ["Kintsugi.Elf"] = [], ["LibObjectFile"] = [], ["ELFSharp"] = [] };

// Warm up: the first reads run unoptimized code (tiered JIT), whichever library is measured.
foreach (var file in files)
{
    var bytes = File.ReadAllBytes(file);
    Kintsugi.Elf.ElfObject.Read(bytes).ToArray();
    LibObjectFile.Elf.ElfFile.Read(new MemoryStream(bytes)).Write(new MemoryStream());
    ELFSharp.ELF.ELFReader.Load(new MemoryStream(bytes), true).Sections.OfType<ELFSharp.ELF.Sections.ISymbolTable>()
        .Sum(t => t.Entries.Count());
}

Console.WriteLine("| object | MiB | relocations | Kintsugi.Elf read / write ms, identical | LibObjectFile read / " +
    "write ms, identical | ELFSharp read ms |");
Console.WriteLine("|---|---|---|---|---|---|");
foreach (var file in files)
{
    var bytes = File.ReadAllBytes(file);
    var kRead = Median(() => Kintsugi.Elf.ElfObject.Read(bytes), out var k);
    var kElf = (Kintsugi.Elf.ElfObject)k!;
    var relocations = kElf.Sections.OfType<Kintsugi.Elf.ElfRelocationSection>().Sum(r => r.Relocations.Count);
    var kWrite = Median(() => kElf.ToArray(), out var kOut);
    var own = $"{kRead:F0} / {kWrite:F0}, {Identical((byte[])kOut!, bytes)}";

    string lof;
    try
    {
        var lRead = Median(() => LibObjectFile.Elf.ElfFile.Read(new MemoryStream(bytes)), out var l);
        var lElf = (LibObjectFile.Elf.ElfFile)l!;
        var lWrite = Median(() => { var s = new MemoryStream(); lElf.Write(s); return s.ToArray(); }, out var lOut);
        lof = $"{lRead:F0} / {lWrite:F0}, {Identical((byte[])lOut!, bytes)}";
    }
    catch (Exception e) { lof = $"fails: {e.GetType().Name}: {e.Message.Split('\n')[0]}"; }

    string sharp;
    try
    {
        sharp = $"{Median(() => ELFSharp.ELF.ELFReader.Load(new MemoryStream(bytes), true).Sections
            .OfType<ELFSharp.ELF.Sections.ISymbolTable>().Sum(t => t.Entries.Count()), out _):F0}";
    }
    catch (Exception e) { sharp = $"fails: {e.GetType().Name}: {e.Message.Split('\n')[0]}"; }
    Console.WriteLine($"| {Path.GetRelativePath(Path.GetDirectoryName(Path.GetDirectoryName(file)!)!, file)} | " +
        $"{bytes.Length / 1048576.0:F1} | {relocations} | {own} | {lof} | {sharp} |");
}

// After the timings: a library that hangs on an input keeps a core busy until the process ends.
foreach (var file in files)
{
    var bytes = File.ReadAllBytes(file);

    foreach (var input in Malformed(bytes, new Random(file.Length)))
    {
        Count("Kintsugi.Elf", () => Kintsugi.Elf.ElfObject.Read(input).ToArray());
        Count("LibObjectFile", () =>
            { var elf = LibObjectFile.Elf.ElfFile.Read(new MemoryStream(input)); elf.Write(new MemoryStream()); });
        Count("ELFSharp", () => ELFSharp.ELF.ELFReader.Load(new MemoryStream(input), true)
            .Sections.OfType<ELFSharp.ELF.Sections.ISymbolTable>().Sum(t => t.Entries.Count()));
    }
}
Console.WriteLine();
Console.WriteLine("Malformed inputs (truncations at 200 points and 300 random header-byte changes per object), by " +
    "how reading (and writing back) ended:");
foreach (var (library, counts) in outcomes)
    Console.WriteLine($"- {library}: "
        + string.Join(", ", counts.OrderByDescending(c => c.Value).Select(c => $"{c.Key} {c.Value}")));

void Count(string library, Action action)
{
    string ending;
    var work = Task.Run(() => { try { action(); return "read"; } catch (Exception e) { return e.GetType().Name; } });
    ending = work.Wait(TimeSpan.FromSeconds(10)) ? work.Result : "hang (over 10 s)";
    outcomes[library][ending] = outcomes[library].GetValueOrDefault(ending) + 1;
}

static IEnumerable<byte[]> Malformed(byte[] seed, Random random)
{
    for (int i = 0; i < 200; i++) yield return seed[..random.Next(seed.Length)];
    long table = (long)BinaryPrimitives.ReadUInt64LittleEndian(seed.AsSpan(40));
    int count = BinaryPrimitives.ReadUInt16LittleEndian(seed.AsSpan(60));
    for (int i = 0; i < 300; i++)
    {
        var bytes = (byte[])seed.Clone();
        for (int n = random.Next(1, 4); n > 0; n--)
            bytes[random.Next(2) == 0 ? random.Next(64) : (int)table + random.Next(count * 64)] =
                (byte)random.Next(256);
        yield return bytes;
    }
}

static string Identical(byte[] written, byte[] original)
{
    if (written.AsSpan().SequenceEqual(original)) return "yes";
    int first = written.AsSpan().CommonPrefixLength(original);
    return $"no ({written.Length} bytes for {original.Length}, first difference at 0x{first:x})";
}

static double Median(Func<object?> action, out object? last)
{
    var times = new List<double>();
    last = null;
    for (int i = 0; i < 5; i++)
    {
        var clock = Stopwatch.StartNew();
        last = action();
        times.Add(clock.Elapsed.TotalMilliseconds);
    }
    times.Sort();
    return times[2];
}
