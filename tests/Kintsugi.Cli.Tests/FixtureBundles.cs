using Kintsugi.Bundles;
using Kintsugi.Testing;

namespace Kintsugi.Cli.Tests;

/// <summary>The bundle the guest specifications publish: a fixture module of the suite's kernel, signed as its
/// level 1.</summary>
internal static class FixtureBundles
{
    public static byte[] Level1(KernelUnderTest kernel, string module, PublisherKey publisher) =>
        Bundle.Create(File.ReadAllBytes(kernel.Modules[module]), new BundleDescription
        {
            Target = kernel.Kernel.Target,
            CumulativeLevel = 1,
            Fixes = [new BundleFix("CVE-2024-1086", [new CveReference(CveId.Parse("CVE-2024-1086"), CveSeverity.High,
                new DateOnly(2024, 1, 31))], "netfilter: nf_tables: reject QUEUE/DROP verdict parameters")],
            PatchedFunctions = [new PatchedFunction("vmlinux", "cmdline_proc_show")],
            CreatedAt = DateTimeOffset.UtcNow,
            BuilderVersion = "0.1.0",
        }, publisher).ToArray();
}
