using System.Buffers.Binary;
using System.Text;

namespace Kintsugi.Elf;

/// <summary>One entry of a note section: owner name ("GNU", "Linux", ...), type and descriptor bytes.</summary>
public sealed class ElfNote
{
    public ElfNote(string name, uint type, ReadOnlyMemory<byte> descriptor)
    {
        ArgumentNullException.ThrowIfNull(name);
        Name = name;
        Type = type;
        Descriptor = descriptor;
    }

    public string Name { get; }

    public uint Type { get; }

    public ReadOnlyMemory<byte> Descriptor { get; }

    public override string ToString() => $"{Name} type 0x{Type:x}, {Descriptor.Length} bytes";
}

/// <summary>
/// SHT_NOTE: a sequence of <see cref="ElfNote"/>s. The descriptor and the next note start at the next
/// multiple of 4 bytes from the section start, or of 8 when the section is 8-aligned (as
/// .note.gnu.property is in ELF64).
/// </summary>
public sealed class ElfNoteSection : ElfSection
{
    // The notes and bytes as read, so that an unchanged section is written exactly as it was,
    // whatever its padding bytes held.
    private ElfNote[]? _notesAsRead;
    private byte[]? _bytesAsRead;
    private int _paddingAsRead;

    public ElfNoteSection(string name)
        : base(name, ElfSectionType.Note)
    {
        Alignment = 4;
    }

    public List<ElfNote> Notes { get; } = [];

    public override ulong Size => (ulong)ComputeSize();

    internal int Padding => Alignment == 8 ? 8 : 4;

    internal static int Pad(int length, int padding) => (length + padding - 1) & -padding;

    /// <summary>
    /// Parses the notes in <paramref name="contents"/>; throws <see cref="ElfFormatException"/> when one does not fit.
    /// </summary>
    internal void ReadNotes(byte[] contents, long fileOffset, int sectionIndex)
    {
        int padding = Padding;
        int position = 0;
        while (position < contents.Length)
        {
            if (contents.Length - position < 12)
            {
                throw new ElfFormatException($"note section [{sectionIndex}]: note header at offset {position} is " +
                    "truncated", fileOffset + position);
            }

            var header = contents.AsSpan(position);
            uint nameSize = BinaryPrimitives.ReadUInt32LittleEndian(header);
            uint descriptorSize = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
            long nameStart = position + 12L;
            long descriptorStart = (nameStart + nameSize + padding - 1) & -padding;
            long end = (descriptorStart + descriptorSize + padding - 1) & -padding;
            // The last descriptor may end unpadded at the end of the section.
            if (descriptorStart > contents.Length || descriptorStart + descriptorSize > contents.Length)
            {
                throw new ElfFormatException(
                    $"note section [{sectionIndex}]: note at offset {position} claims name size {nameSize} and " +
                    $"descriptor size {descriptorSize}, beyond the section's {contents.Length} bytes",
                    fileOffset + position);
            }

            var nameBytes = contents.AsSpan((int)nameStart, (int)nameSize);
            if (nameBytes.Length > 0 && nameBytes[^1] == 0)
            {
                nameBytes = nameBytes[..^1];
            }

            var descriptor = contents.AsSpan((int)descriptorStart, (int)descriptorSize).ToArray();
            Notes.Add(new ElfNote(Encoding.UTF8.GetString(nameBytes), type, descriptor));
            position = (int)Math.Min(end, contents.Length);
        }

        _notesAsRead = [.. Notes];
        _bytesAsRead = contents;
        _paddingAsRead = padding;
    }

    private bool UnchangedSinceRead()
    {
        if (_notesAsRead is null || _notesAsRead.Length != Notes.Count)
        {
            return false;
        }

        for (int i = 0; i < Notes.Count; i++)
        {
            if (!ReferenceEquals(Notes[i], _notesAsRead[i]))
            {
                return false;
            }
        }

        // Padding choice follows Alignment; a changed alignment means re-encoding.
        return Padding == _paddingAsRead;
    }

    private int ComputeSize()
    {
        if (UnchangedSinceRead())
        {
            return _bytesAsRead!.Length;
        }

        int padding = Padding;
        int size = 0;
        foreach (var note in Notes)
        {
            size = Pad(Pad(size + 12 + EncodedNameSize(note), padding) + note.Descriptor.Length, padding);
        }

        return size;
    }

    private static int EncodedNameSize(ElfNote note) =>
        note.Name.Length == 0 ? 0 : Encoding.UTF8.GetByteCount(note.Name) + 1;

    internal override void WriteContent(Span<byte> destination, ElfWriter writer)
    {
        if (UnchangedSinceRead())
        {
            _bytesAsRead.CopyTo(destination);
            return;
        }

        int padding = Padding;
        int offset = 0;
        foreach (var note in Notes)
        {
            int nameSize = EncodedNameSize(note);
            BinaryPrimitives.WriteUInt32LittleEndian(destination[offset..], (uint)nameSize);
            BinaryPrimitives.WriteUInt32LittleEndian(destination[(offset + 4)..], (uint)note.Descriptor.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(destination[(offset + 8)..], note.Type);
            offset += 12;
            var nameField = destination.Slice(offset, Pad(offset + nameSize, padding) - offset);
            nameField.Clear();
            if (nameSize > 0)
            {
                Encoding.UTF8.GetBytes(note.Name, nameField);
            }

            offset += nameField.Length;
            var descriptorField = destination.Slice(offset, Pad(offset + note.Descriptor.Length, padding) - offset);
            descriptorField.Clear();
            note.Descriptor.Span.CopyTo(descriptorField);
            offset += descriptorField.Length;
        }
    }
}
