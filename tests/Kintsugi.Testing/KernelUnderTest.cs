using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Kintsugi.Lab;

namespace Kintsugi.Testing;

/// <summary>
/// A distribution kernel fetched once per machine (cached), with the test fixture modules built against its
/// headers once per fixture source version, and a lab that boots it. Shared by every test of the run.
/// </summary>
public sealed class KernelUnderTest
{
    private static readonly ConcurrentDictionary<KernelRelease, Lazy<Task<KernelUnderTest>>> Instances = new();

    public FetchedKernel Kernel { get; }
    public IReadOnlyDictionary<string, string> Modules { get; }
    public LabMachine Lab { get; }
    public KernelRelease Release => Kernel.Target.Release;

    private KernelUnderTest(FetchedKernel kernel, IReadOnlyDictionary<string, string> modules, LabMachine lab)
    {
        Kernel = kernel;
        Modules = modules;
        Lab = lab;
    }

    public static Task<KernelUnderTest> GetAsync(KernelRelease release) =>
        Instances.GetOrAdd(release, r => new Lazy<Task<KernelUnderTest>>(() => CreateAsync(r))).Value;

    private static async Task<KernelUnderTest> CreateAsync(KernelRelease release)
    {
        var cache = DebianKernelArchive.DefaultCacheRoot;
        var archive = new DebianKernelArchive(cache);
        var kernel = await archive.FetchAsync(release, KernelParts.Image | KernelParts.Headers);
        var modules = await BuildFixturesAsync(kernel, cache);
        return new KernelUnderTest(kernel, modules,
            new LabMachine(archive, cache, Repository.KintsugiBinary, _ => { }));
    }

    private static async Task<IReadOnlyDictionary<string,
        string>> BuildFixturesAsync(FetchedKernel kernel, string cache)
    {
        var sources = Directory.GetFiles(Repository.FixtureModules).Order(StringComparer.Ordinal).ToList();
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            string.Join("\n", sources.Select(f => Path.GetFileName(f) + File.ReadAllText(f))))))[..16];
        var directory = Path.Combine(cache, "fixtures", kernel.Target.Release.Value, key);
        if (!Directory.Exists(directory))
        {
            var building = directory + ".build-" + Environment.ProcessId;
            if (Directory.Exists(building)) Directory.Delete(building, true);
            await ExternalModuleBuild.BuildAsync(kernel, Repository.FixtureModules, building);
            try { Directory.Move(building, directory); }
            // another process won the race
            catch (IOException) when (Directory.Exists(directory)) { Directory.Delete(building, true); }
        }
        return Directory.GetFiles(directory, "*.ko").ToDictionary(p => Path.GetFileNameWithoutExtension(p), p => p);
    }

    /// <summary>A guest file for fixture module <paramref name="name"/>, at /fixtures/NAME.ko.</summary>
    public GuestFile Module(string name) => new(Modules[name], $"/fixtures/{name}.ko");

    /// <summary>All fixture modules, under /fixtures.</summary>
    public IReadOnlyList<GuestFile> AllModules => Modules.Keys.Select(Module).ToList();

    public Task<LabRunResult> RunAsync(string script, IReadOnlyList<GuestFile>? files = null, string? disk = null,
        IReadOnlyList<string>? kernelArguments = null, int timeoutSeconds = 180) =>
        Lab.RunAsync(new LabRunSpec(Release, script, files ?? AllModules, TimeSpan.FromSeconds(timeoutSeconds), disk,
        kernelArguments));
}
