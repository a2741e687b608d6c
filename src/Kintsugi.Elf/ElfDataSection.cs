namespace Kintsugi.Elf;

/// <summary>
/// A section whose contents are plain bytes: code, data, debug info, and any type the model does not interpret.
/// </summary>
public sealed class ElfDataSection : ElfSection
{
    private byte[] _data;

    public ElfDataSection(string name, ElfSectionType type = ElfSectionType.ProgBits, byte[]? data = null)
        : base(name, type)
    {
        if (type is ElfSectionType.NoBits or ElfSectionType.Null)
        {
            throw new ArgumentException($"Use {nameof(ElfNoBitsSection)} for SHT_NOBITS; SHT_NULL is implicit.",
                nameof(type));
        }

        _data = data ?? [];
    }

    /// <summary>The contents. Replace or edit in place; the writer takes the length as sh_size.</summary>
    public byte[] Data
    {
        get => _data;
        set => _data = value ?? throw new ArgumentNullException(nameof(value));
    }

    public override ulong Size => (ulong)_data.Length;

    internal override void WriteContent(Span<byte> destination, ElfWriter writer) => _data.CopyTo(destination);
}

/// <summary>SHT_NOBITS (.bss and friends): a size, but no bytes in the file.</summary>
public sealed class ElfNoBitsSection : ElfSection
{
    private ulong _size;

    public ElfNoBitsSection(string name, ulong size = 0)
        : base(name, ElfSectionType.NoBits)
    {
        _size = size;
    }

    public override ulong Size => _size;

    /// <summary>Sets the size the section occupies in memory.</summary>
    public void SetSize(ulong size) => _size = size;

    internal override bool OccupiesFile => false;

    internal override void WriteContent(Span<byte> destination, ElfWriter writer)
    {
    }
}
