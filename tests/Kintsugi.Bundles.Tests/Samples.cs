using System.Buffers.Binary;

namespace Kintsugi.Bundles.Tests;

/// <summary>
/// Shared inputs: a real ELF file as the module payload, a target kernel, a description. Free of xunit and of
/// Kintsugi.Testing, so that bench/bundles measures the same bundles.
/// </summary>
internal static partial class Samples
{
    /// <summary>A real ELF executable stands in for the .ko: what matters is realistic, binary bytes.</summary>
    public static readonly byte[] Module = File.ReadAllBytes("/bin/true");

    public static readonly KernelTarget Target = new(
        KernelRelease.Parse("6.1.0-56-cloud-amd64"), "6.1.153-1",
        BuildId.Parse("5d3ab5a3c6f1a0b2e4d7c9f8a1b2c3d4e5f60718"));

    public static readonly DateTimeOffset CreatedAt = new(2025, 3, 14, 9, 26, 53, TimeSpan.Zero);

    public static BundleDescription Description(KernelTarget? target = null, int level = 3) => new()
    {
        Target = target ?? Target,
        CumulativeLevel = level,
        Fixes =
        [
            new BundleFix("CVE-2024-1086",
            [new CveReference(CveId.Parse("CVE-2024-1086"), CveSeverity.High, new DateOnly(2024, 1, 31))],
                "netfilter: nf_tables: reject QUEUE/DROP verdict parameters"),
            new BundleFix("upstream-f342de4e2f33", [
                new CveReference(CveId.Parse("CVE-2024-26581"), CveSeverity.Medium, new DateOnly(2024, 2, 20)),
                new CveReference(CveId.Parse("CVE-2024-26925"), CveSeverity.Critical, new DateOnly(2024, 4, 25)),
            ], "netfilter: nft_set_rbtree: skip end interval element from gc\nand release mutex"),
            new BundleFix("hardening-1", [], "Kintsugi hardening without a CVE (é, <tag>)"),
        ],
        PatchedFunctions =
        [
            new PatchedFunction("vmlinux", "nft_verdict_init"),
            new PatchedFunction("vmlinux", "nft_rbtree_gc"),
            new PatchedFunction("nf_tables", "nf_tables_newset"),
        ],
        CreatedAt = CreatedAt,
        BuilderVersion = "0.1.0",
        EffectivePackageVersion = "6.1.158-1",
    };

    /// <summary>Offsets of the envelope's sections in a bundle's bytes.</summary>
    public static (int Manifest, int Module, int Signature, int End) Layout(byte[] bytes)
    {
        var manifestLength = (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(12));
        var moduleLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(16));
        var manifest = Bundle.HeaderLength;
        var module = manifest + manifestLength;
        var signature = module + moduleLength;
        return (manifest, module, signature, signature + Bundle.SignatureBlockLength);
    }
}

/// <summary>A stream that cannot seek, like a network download.</summary>
internal sealed class ForwardOnlyStream(Stream inner) : Stream
{
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position
    {
        get => throw new NotSupportedException(); set =>
        throw new NotSupportedException();
    }
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, Math.Min(count, 4096));
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
