using System.Buffers.Binary;
using System.IO.Compression;
using Kintsugi.Kernel;

namespace Kintsugi.Kernel.Archive;

/// <summary>
/// An x86 bzImage (vmlinuz): its setup header locates the compressed vmlinux payload, an ELF file whose
/// notes carry the build-id. This is how a build is identified without the 283 MB debug package.
/// </summary>
public static class KernelImage
{
    /// <summary>Reads the build-id of the vmlinux inside a bzImage.</summary>
    public static async Task<BuildId> ReadBuildIdAsync(string vmlinuzPath, CancellationToken cancellation = default)
    {
        var vmlinux = await ReadVmlinuxAsync(vmlinuzPath, cancellation);
        try
        {
            return ElfSectionTable.Read(vmlinux).FindBuildId()
                ?? throw new KernelArchiveException($"the vmlinux inside {vmlinuzPath} has no GNU build-id note");
        }
        catch (InvalidDataException e)
        {
            throw new KernelArchiveException($"the payload of {vmlinuzPath} did not decompress to an ELF vmlinux: " +
                $"{e.Message}", inner: e);
        }
    }

    /// <summary>The (stripped) vmlinux ELF inside a bzImage, decompressed: the exact bytes the kernel runs.</summary>
    public static async Task<byte[]> ReadVmlinuxAsync(string vmlinuzPath, CancellationToken cancellation = default)
    {
        var image = await File.ReadAllBytesAsync(vmlinuzPath, cancellation);
        return await DecompressAsync(Payload(image, vmlinuzPath), vmlinuzPath, cancellation);
    }

    /// <summary>The compressed payload, located through the boot protocol's payload_offset/payload_length (protocol
    /// 2.08+).</summary>
    internal static ReadOnlyMemory<byte> Payload(byte[] image, string path)
    {
        if (image.Length < 0x250
            || BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(0x202)) != 0x53726448 /* "HdrS" */)
            throw new KernelArchiveException($"{path} is not an x86 bzImage (no HdrS setup header)");
        var protocol = BinaryPrimitives.ReadUInt16LittleEndian(image.AsSpan(0x206));
        if (protocol < 0x208) throw new KernelArchiveException($"{path} uses boot protocol " +
            $"{protocol >> 8}.{protocol & 0xFF}, older than 2.08: no payload location");
        int setupSectors = image[0x1F1] == 0 ? 4 : image[0x1F1];
        var offset = (long)(setupSectors + 1) * 512 + BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(0x248));
        var length = (long)BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(0x24C));
        if (offset + length > image.Length)
            throw new KernelArchiveException($"{path}: the payload lies outside the file (truncated image?)");
        return image.AsMemory((int)offset, (int)length);
    }

    private static async Task<byte[]>
        DecompressAsync(ReadOnlyMemory<byte> payload, string path, CancellationToken cancellation)
    {
        var span = payload.Span;
        if (span.StartsWith((ReadOnlySpan<byte>)[0x1F, 0x8B]))
        {
            using var gzip = new GZipStream(new MemoryStream(payload.ToArray()), CompressionMode.Decompress);
            using var output = new MemoryStream();
            await gzip.CopyToAsync(output, cancellation);
            return output.ToArray();
        }
        (string Tool, string[] Args)? decoder =
            span.StartsWith((ReadOnlySpan<byte>)[0xFD, 0x37, 0x7A, 0x58, 0x5A]) ? ("xz", ["-dc"]) :
            span.StartsWith((ReadOnlySpan<byte>)[0x28, 0xB5, 0x2F, 0xFD]) ? ("zstd", ["-dc"]) :
            span.StartsWith((ReadOnlySpan<byte>)[0x02, 0x21, 0x4C, 0x18]) ? ("lz4", ["-dc"]) :
            span.StartsWith((ReadOnlySpan<byte>)[0x5D, 0x00, 0x00]) ? ("xz", ["--format=lzma", "-dc"]) :
            span.StartsWith("BZh"u8) ? ("bzip2", ["-dc"]) :
            span.StartsWith((ReadOnlySpan<byte>)[0x89, 0x4C, 0x5A, 0x4F]) ? ("lzop", ["-dc"]) : null;
        if (decoder is not { } d)
            throw new KernelArchiveException($"{path}: unknown payload compression (magic " +
                $"{Convert.ToHexString(span[..Math.Min(6, span.Length)])})");

        var input = Path.GetTempFileName();
        var output2 = input + ".out";
        try
        {
            await File.WriteAllBytesAsync(input, payload.ToArray(), cancellation);
            // The kernel appends the decompressed size after the stream, so decoders may complain about
            // trailing data and exit non-zero; the output is judged by whether it is a whole ELF file.
            var result = await ExternalCommand.RunAsync("sh", ["-c", $"{d.Tool} {string.Join(' ', d.Args)} < \"$1\" " +
                $"> \"$2\"", "sh", input, output2], cancellation: cancellation);
            if (!File.Exists(output2) || new FileInfo(output2).Length == 0)
                throw new KernelArchiveException($"{path}: {d.Tool} could not decompress the kernel payload: " +
                    $"{result.StandardError.Trim()} (is {d.Tool} installed?)");
            return await File.ReadAllBytesAsync(output2, cancellation);
        }
        finally
        {
            File.Delete(input);
            File.Delete(output2);
        }
    }
}

/// <summary>A kernel could not be found in, fetched from or verified against the distribution archive.</summary>
public sealed class KernelArchiveException(string message, ExitCode exitCode = ExitCode.NotFound,
    Exception? inner = null) : KintsugiException(message, inner)
{
    public override ExitCode ExitCode { get; } = exitCode;
}
