using Kintsugi.Bundles;
using Kintsugi.Testing;

namespace Kintsugi.Agent.Tests;

/// <summary>Real inputs shared by the specifications: fixture livepatch modules built for a real kernel, descriptions,
/// signing.</summary>
internal static class Inputs
{
    public static BundleDescription Description(KernelTarget target, int level, string fixId = "CVE-2024-1086") => new()
    {
        Target = target,
        CumulativeLevel = level,
        Fixes = [new BundleFix(fixId, [new CveReference(CveId.Parse("CVE-2024-1086"), CveSeverity.High,
        new DateOnly(2024, 1, 31))], "netfilter: nf_tables: reject QUEUE/DROP verdict parameters")],
        PatchedFunctions = [new PatchedFunction("vmlinux", "cmdline_proc_show")],
        CreatedAt = DateTimeOffset.UtcNow,
        BuilderVersion = "0.1.0",
    };

    /// <summary>A fixture module's bytes, as built for <paramref name="kernel"/>.</summary>
    public static byte[] Module(KernelUnderTest kernel, string name) => File.ReadAllBytes(kernel.Modules[name]);

    public static byte[]
        Sign(PublisherKey key, KernelUnderTest kernel, string module, int level, KernelTarget? target = null) =>
        Bundle.Create(Module(kernel, module), Description(target ?? kernel.Kernel.Target, level), key).ToArray();

    /// <summary>The offset of the module section in a bundle's bytes.</summary>
    public static int ModuleOffset(byte[] bundle) =>
        Bundle.HeaderLength + (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(bundle.AsSpan(12));
}
