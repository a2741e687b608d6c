using System.Diagnostics;
using Kintsugi.Bundles;
using Kintsugi.Bundles.Tests;

// The bundle reader's speed on damaged input, moved out of the unit tests (a timing there fails under load):
// the tamper specification's 4,000 seeded random mutations of a signed bundle, each read and verified, and read
// again from a stream that cannot seek. Best and median of ROUNDS, and the slowest single mutation; goal: the
// 4,000 under 20 s (the bound the unit test used to assert).
// Usage: dotnet bench/bundles/bin/Release/net10.0/Kintsugi.Bundles.Bench.dll [ROUNDS]   (bench/bundles/run.sh)
int rounds = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 5;
const int Mutations = 4000;
string trustDirectory = Directory.CreateTempSubdirectory("kintsugi-bench-bundles.").FullName;
try
{
    using var key = PublisherKey.Generate();
    var trust = TrustStore.Open(trustDirectory);
    trust.Add(key.PublicKey);
    byte[] bundle = Bundle.Create(Samples.Module, Samples.Description(), key).ToArray();

    var totals = new List<double>();
    double slowest = 0;
    int refused = 0;
    for (int round = 0; round < rounds; round++)
    {
        var random = new Random(20250314);
        refused = 0;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < Mutations; i++)
        {
            var single = Stopwatch.StartNew();
            byte[] mutated = BundleMutations.Mutate(bundle, random);
            try { BundleVerifier.Verify(Bundle.Read(mutated), trust, Samples.Target); }
            catch (BundleException) { refused++; }
            using var stream = new ForwardOnlyStream(new MemoryStream(mutated));
            try { Bundle.Read(stream); }
            catch (BundleException) { }
            slowest = Math.Max(slowest, single.Elapsed.TotalMilliseconds);
        }
        totals.Add(clock.Elapsed.TotalSeconds);
    }

    var sorted = totals.Order().ToList();
    Console.WriteLine($"{Mutations} mutations of a {bundle.Length / 1024} KiB bundle ({refused} refused), read, " +
        $"verified and read again as a stream: best {sorted[0]:F2} s, median {sorted[sorted.Count / 2]:F2} s, " +
        $"first {totals[0]:F2} s of {rounds} rounds; slowest single mutation {slowest:F1} ms " +
        $"(goal: the {Mutations} under 20 s)");
}
finally
{
    Directory.Delete(trustDirectory, recursive: true);
}
