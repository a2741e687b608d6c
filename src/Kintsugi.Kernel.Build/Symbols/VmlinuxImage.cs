using System.Buffers.Binary;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>
/// The kernel proper as the boot image carries it: the ELF vmlinux inside the bzImage payload, stripped of
/// symbols but with its program headers, so the bytes at any link-time address can be read. With kallsyms
/// addresses (from a nokaslr boot) this is enough to compare compiled functions with the shipped code.
/// </summary>
public sealed class VmlinuxImage
{
    private readonly byte[] _image;
    private readonly IReadOnlyList<(ulong Address, ulong FileOffset, ulong FileSize)> _segments;

    private VmlinuxImage(byte[] image, IReadOnlyList<(ulong, ulong, ulong)> segments)
    {
        _image = image;
        _segments = segments;
    }

    public static VmlinuxImage Parse(byte[] image)
    {
        var span = image.AsSpan();
        if (span.Length < 64 || !span[..4].SequenceEqual("\u007fELF"u8) || span[4] != 2 || span[5] != 1)
            throw new SymbolResolutionException("the kernel image's payload is not a 64-bit little-endian ELF vmlinux");
        var programHeaders = BinaryPrimitives.ReadUInt64LittleEndian(span[32..]);
        var entrySize = BinaryPrimitives.ReadUInt16LittleEndian(span[54..]);
        var count = BinaryPrimitives.ReadUInt16LittleEndian(span[56..]);
        if (entrySize < 56 || programHeaders + (ulong)entrySize * count > (ulong)span.Length)
            throw new SymbolResolutionException("the vmlinux program headers lie outside the image");
        var segments = new List<(ulong, ulong, ulong)>();
        for (var i = 0; i < count; i++)
        {
            var header = span.Slice((int)programHeaders + i * entrySize, entrySize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(header) != 1) continue; // PT_LOAD
            var offset = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
            var virtualAddress = BinaryPrimitives.ReadUInt64LittleEndian(header[16..]);
            var fileSize = BinaryPrimitives.ReadUInt64LittleEndian(header[32..]);
            if (offset + fileSize > (ulong)span.Length)
                throw new SymbolResolutionException($"a vmlinux segment at {virtualAddress:x} lies outside the image");
            segments.Add((virtualAddress, offset, fileSize));
        }
        return new VmlinuxImage(image, segments);
    }

    /// <summary>The whole decompressed vmlinux file.</summary>
    internal byte[] Bytes => _image;

    /// <summary>The link-time address the file byte at <paramref name="fileOffset"/> is loaded at, or null when no
    /// loaded segment holds it.</summary>
    internal ulong? AddressAt(long fileOffset)
    {
        foreach (var (start, offset, size) in _segments)
            if ((ulong)fileOffset >= offset && (ulong)fileOffset < offset + size)
                return start + ((ulong)fileOffset - offset);
        return null;
    }

    /// <summary>Where in the file the byte loaded at a link-time address lies, or null when no loaded segment holds
    /// it.</summary>
    internal long? FileOffsetOf(ulong address)
    {
        foreach (var (start, offset, size) in _segments)
            if (address >= start && address - start < size) return (long)(offset + (address - start));
        return null;
    }

    /// <summary>The shipped bytes at a link-time address, or null when no loaded segment holds them all.</summary>
    public ReadOnlyMemory<byte>? Read(ulong address, int length)
    {
        foreach (var (start, offset, size) in _segments)
            if (address >= start && address + (ulong)length <= start + size)
                return _image.AsMemory((int)(offset + (address - start)), length);
        return null;
    }
}
