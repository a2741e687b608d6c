using Kintsugi.Testing;

namespace Kintsugi.Elf.Tests.Support;

/// <summary>
/// The <see cref="Samples.Variants"/>, compiled once per test run (in parallel) into one temporary directory.
/// </summary>
internal static class CompiledSamples
{
    private static readonly Lazy<IReadOnlyDictionary<string, string>> Objects = new(CompileAll);
    private static readonly TemporaryDirectory Directory = new();

    public static TheoryData<string> Names
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var variant in Samples.Variants)
            {
                data.Add(variant.Name);
            }

            return data;
        }
    }

    /// <summary>The path of the object compiled for variant <paramref name="name"/>.</summary>
    public static string PathOf(string name) => Objects.Value[name];

    public static byte[] BytesOf(string name) => File.ReadAllBytes(PathOf(name));

    private static IReadOnlyDictionary<string, string> CompileAll()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Directory.Dispose();
        var paths = new System.Collections.Concurrent.ConcurrentDictionary<string, string>();
        Parallel.ForEach(Samples.Variants, new ParallelOptions { MaxDegreeOfParallelism = 2 }, variant =>
        {
            string name = $"{variant.Name}-{variant.File}";
            paths[variant.Name] = Directory.Compile(name, variant.Source, variant.Flags);
        });
        return paths;
    }
}
