namespace Kintsugi.Elf;

/// <summary>
/// The only exception <see cref="ElfObject.Read(ReadOnlySpan{byte})"/> and <see cref="ElfObject.Load"/>
/// throw for malformed input: truncated data, offsets or sizes outside the file, bad indexes,
/// overlapping sections, unterminated strings, unsupported classes or machines.
/// </summary>
public sealed class ElfFormatException : Exception
{
    public ElfFormatException(string message, long offset = -1)
        : base(offset >= 0 ? $"{message} (at file offset 0x{offset:x})" : message)
    {
        Offset = offset;
    }

    public ElfFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
        Offset = -1;
    }

    /// <summary>File offset of the offending structure, or -1 when no single offset applies.</summary>
    public long Offset { get; }
}
