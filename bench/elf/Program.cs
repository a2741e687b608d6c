using System.Diagnostics;
using System.Text;
using Kintsugi.Elf;
using Kintsugi.Elf.Tests.Support;

// Kintsugi.Elf's speed goals, moved out of the unit tests (timings there failed under load):
//  - an object with 65,400 sections (more than 0xff00: extended indexes) read, one symbol renamed and the
//    object laid out again and written: best and median of ROUNDS, goal under 1 s;
//  - every malformed variant of MalformedInputSpecification (3,000 random ones per seed and the aimed ones)
//    read, and written and re-read when accepted: the slowest single variant, goal under 1 s.
// Usage: dotnet bench/elf/bin/Release/net10.0/Kintsugi.Elf.Bench.dll [ROUNDS]   (bench/elf/run.sh builds it)
int rounds = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 5;
string work = Directory.CreateTempSubdirectory("kintsugi-bench-elf.").FullName;
try
{
    ManySections(work, rounds);
    foreach (var (variant, seed) in new[] { ("sections", 1), ("cpp", 2), ("cet", 3) })
        SlowestMutation(work, variant, seed);
}
finally
{
    Directory.Delete(work, recursive: true);
}

static void ManySections(string work, int rounds)
{
    const int functions = 32700; // a .text.fN and .rela.text.fN each: 65,400 sections
    var source = new StringBuilder();
    for (int i = 0; i < functions; i++)
    {
        source.Append(".section .text.f").Append(i).Append(",\"ax\",@progbits\n.globl f").Append(i)
            .Append("\nf").Append(i).Append(":\n call f").Append((i + 1) % functions).Append("\n ret\n");
    }

    File.WriteAllText(Path.Combine(work, "many.s"), source.ToString());
    Run(work, "as", "many.s", "-o", "many.o");
    byte[] bytes = File.ReadAllBytes(Path.Combine(work, "many.o"));

    var times = new List<double>();
    for (int round = 0; round < rounds; round++)
    {
        var clock = Stopwatch.StartNew();
        var elf = ElfObject.Read(bytes);
        elf.SymbolTable!.Symbols[0].Name = "renamed"; // forces a fresh layout and string tables
        elf.ToArray();
        times.Add(clock.Elapsed.TotalMilliseconds);
    }

    times.Sort();
    Console.WriteLine($"many-sections: {bytes.Length / 1024} KiB, {functions * 2} sections, read and relaid out: " +
        $"best {times[0]:F0} ms, median {times[times.Count / 2]:F0} ms, first {times.Max():F0} ms " +
        $"of {rounds} rounds (goal: under 1000 ms)");
}

static void SlowestMutation(string work, string variant, int randomSeed)
{
    var (name, file, text, flags) = Samples.Variants.Single(v => v.Name == variant);
    string sourcePath = Path.Combine(work, $"{name}-{file}");
    File.WriteAllText(sourcePath, text);
    string objectPath = Path.ChangeExtension(sourcePath, ".o");
    Run(work, file.EndsWith(".cpp", StringComparison.Ordinal) ? "g++-12" : "gcc-12",
        [.. flags, "-c", sourcePath, "-o", objectPath]);
    byte[] seed = File.ReadAllBytes(objectPath);

    int count = 0;
    double slowest = 0;
    string slowestName = "";
    var all = Stopwatch.StartNew();
    foreach (var mutation in Mutations.All(variant, seed, randomMutations: 3000, randomSeed))
    {
        var clock = Stopwatch.StartNew();
        try
        {
            var written = ElfObject.Read(mutation.Bytes).ToArray();
            ElfObject.Read(written).ToArray();
        }
        catch (ElfFormatException)
        {
        }

        count++;
        if (clock.Elapsed.TotalMilliseconds > slowest)
        {
            (slowest, slowestName) = (clock.Elapsed.TotalMilliseconds, mutation.Description);
        }
    }

    Console.WriteLine($"mutations {variant}: {count} variants in {all.ElapsedMilliseconds} ms, slowest " +
        $"{slowest:F1} ms ({slowestName}) (goal: under 1000 ms)");
}

static void Run(string directory, string program, params string[] arguments)
{
    var start = new ProcessStartInfo(program) { WorkingDirectory = directory, RedirectStandardError = true };
    foreach (var argument in arguments) start.ArgumentList.Add(argument);
    using var process = Process.Start(start)!;
    string error = process.StandardError.ReadToEnd();
    process.WaitForExit();
    if (process.ExitCode != 0) throw new InvalidOperationException($"{program} failed: {error}");
}
