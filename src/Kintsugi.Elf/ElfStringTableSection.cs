using System.Text;

namespace Kintsugi.Elf;

/// <summary>
/// SHT_STRTAB. Its contents are derived: the writer keeps the bytes as read while every name that
/// uses the table still has the offset it was read from, and otherwise rebuilds the table from the
/// names of the sections (for <see cref="ElfObject.SectionNameTable"/>) and symbols that use it.
/// </summary>
public sealed class ElfStringTableSection : ElfSection
{
    private readonly byte[] _contents;

    public ElfStringTableSection(string name)
        : this(name, [0])
    {
    }

    internal ElfStringTableSection(string name, byte[] contents)
        : base(name, ElfSectionType.StringTable)
    {
        _contents = contents;
        Alignment = 1;
    }

    /// <summary>The bytes as read (or a single NUL for a new table).</summary>
    public ReadOnlyMemory<byte> Contents => _contents;

    public override ulong Size => (ulong)_contents.Length;

    /// <summary>The NUL-terminated UTF-8 string at <paramref name="offset"/> of <see cref="Contents"/>.</summary>
    /// <exception cref="ElfFormatException">The offset is outside the table or the string has no
    /// terminator.</exception>
    public string GetString(uint offset)
    {
        if (offset >= (uint)_contents.Length)
        {
            throw new ElfFormatException($"string offset {offset} is outside string table {Describe()} of " +
                $"{_contents.Length} bytes");
        }

        var tail = _contents.AsSpan((int)offset);
        int length = tail.IndexOf((byte)0);
        if (length < 0)
        {
            throw new ElfFormatException(
                $"string at offset {offset} of string table {Describe()} has no NUL terminator");
        }

        return length == 0 ? string.Empty : Encoding.UTF8.GetString(tail[..length]);
    }

    private string Describe() => $"[{Index}] '{Name}'";

    internal override ulong GetWriteSize(ElfWriter writer) => (ulong)writer.GetStringTableContents(this).Length;

    internal override void WriteContent(Span<byte> destination, ElfWriter writer)
        => writer.GetStringTableContents(this).CopyTo(destination);
}
