namespace Kintsugi.Elf;

/// <summary>
/// An ELF64 little-endian x86-64 relocatable object (gcc -c output, kernel .o, .ko) as an editable model.
/// <para>
/// <see cref="Read(ReadOnlySpan{byte})"/> accepts only well-formed input and otherwise throws
/// <see cref="ElfFormatException"/>. Writing an unmodified object reproduces the input byte for byte;
/// after edits the writer lays the file out anew, rebuilds string tables and renumbers every index.
/// </para>
/// </summary>
public sealed class ElfObject
{
    public ElfObject()
    {
        Sections = new ElfSectionCollection(this);
    }

    public ElfHeader Header { get; } = new();

    /// <summary>The sections in section header order; section header 0 (SHT_NULL) is implicit.</summary>
    public ElfSectionCollection Sections { get; }

    /// <summary>The string table of section names (e_shstrndx), or null when sections have no names.</summary>
    public ElfStringTableSection? SectionNameTable { get; set; }

    /// <summary>The first SHT_SYMTAB section, or null.</summary>
    public ElfSymbolTableSection? SymbolTable
    {
        get
        {
            foreach (var section in Sections)
            {
                if (section is ElfSymbolTableSection table)
                {
                    return table;
                }
            }

            return null;
        }
    }

    // The file this object was read from, so an unchanged layout can be written back over it.
    internal byte[]? OriginalImage;
    internal ulong OriginalSectionHeaderOffset;

    /// <summary>
    /// An empty relocatable object with .symtab, .strtab and .shstrtab, ready for sections to be inserted before them.
    /// </summary>
    public static ElfObject CreateRelocatable()
    {
        var elf = new ElfObject();
        var strings = new ElfStringTableSection(".strtab");
        var symbols = new ElfSymbolTableSection(".symtab") { StringTable = strings };
        var sectionNames = new ElfStringTableSection(".shstrtab");
        elf.Sections.Add(symbols);
        elf.Sections.Add(strings);
        elf.Sections.Add(sectionNames);
        elf.SectionNameTable = sectionNames;
        return elf;
    }

    /// <summary>Reads an object from memory (the bytes are copied).</summary>
    /// <exception cref="ElfFormatException">The input is not a well-formed ELF64 x86-64 relocatable object.</exception>
    public static ElfObject Read(ReadOnlySpan<byte> image) => ElfReader.Read(image.ToArray());

    /// <summary>Reads an object from a file.</summary>
    /// <exception cref="ElfFormatException">The file is not a well-formed ELF64 x86-64 relocatable object.</exception>
    public static ElfObject Load(string path) => ElfReader.Read(File.ReadAllBytes(path));

    /// <summary>
    /// Writes the object to a new array. May normalize the model first (see <see cref="Write(Stream)"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The model refers to sections or symbols it does not
    /// contain.</exception>
    public byte[] ToArray() => new ElfWriter(this).Write();

    /// <summary>
    /// Writes the object. Before writing, local symbols are moved before global ones and an
    /// SHT_SYMTAB_SHNDX section is added where symbols need extended section indexes.
    /// </summary>
    /// <exception cref="InvalidOperationException">The model refers to sections or symbols it does not
    /// contain.</exception>
    public void Write(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        stream.Write(ToArray());
    }

    public void Save(string path) => File.WriteAllBytes(path, ToArray());

    /// <summary>The first section named <paramref name="name"/>, or null.</summary>
    public ElfSection? FindSection(string name)
    {
        foreach (var section in Sections)
        {
            if (section.Name == name)
            {
                return section;
            }
        }

        return null;
    }

    /// <summary>
    /// The section at ELF index <paramref name="index"/> (1-based; 0 is the null section and gives null).
    /// </summary>
    public ElfSection? GetSection(int index) => index == 0 ? null : Sections[index - 1];

    /// <summary>The relocation sections whose target is <paramref name="target"/>.</summary>
    public IEnumerable<ElfRelocationSection> GetRelocationSections(ElfSection target)
    {
        foreach (var section in Sections)
        {
            if (section is ElfRelocationSection relocations && ReferenceEquals(relocations.Target, target))
            {
                yield return relocations;
            }
        }
    }

    /// <summary>The group <paramref name="section"/> is a member of, or null.</summary>
    public ElfGroupSection? GetGroup(ElfSection section)
    {
        foreach (var candidate in Sections)
        {
            if (candidate is ElfGroupSection group && group.Members.Contains(section))
            {
                return group;
            }
        }

        return null;
    }

    /// <summary>
    /// Removes <paramref name="section"/> together with what cannot exist without it: the relocation
    /// sections that apply to it, its membership in groups and its STT_SECTION symbols. Other symbols
    /// defined in it and relocations against its symbols are the caller's to remove or redirect;
    /// writing fails with <see cref="InvalidOperationException"/> while any remain.
    /// </summary>
    public void RemoveSection(ElfSection section) => RemoveSections([section]);

    /// <summary>
    /// <see cref="RemoveSection"/> for many sections in one pass over the object, which keeps
    /// removing thousands of sections from a large object linear rather than quadratic.
    /// </summary>
    public void RemoveSections(IEnumerable<ElfSection> sections)
    {
        ArgumentNullException.ThrowIfNull(sections);
        var doomed = new HashSet<ElfSection>(ReferenceEqualityComparer.Instance);
        foreach (var section in sections)
        {
            ArgumentNullException.ThrowIfNull(section, nameof(sections));
            if (!ReferenceEquals(section.Object, this))
            {
                throw new InvalidOperationException($"Section '{section.Name}' is not in this object.");
            }

            doomed.Add(section);
        }

        // Relocation sections go with their target, including relocations of relocations, however nested.
        bool grew = true;
        while (grew)
        {
            grew = false;
            foreach (var candidate in Sections)
            {
                if (candidate is ElfRelocationSection { Target: { } target } && doomed.Contains(target)
                    && doomed.Add(candidate))
                {
                    grew = true;
                }
            }
        }

        foreach (var candidate in Sections)
        {
            switch (candidate)
            {
                case ElfGroupSection group:
                    group.Members.RemoveAll(doomed.Contains);
                    break;
                case ElfSymbolTableSection table:
                    table.Symbols.RemoveAll(symbol => symbol.Type == ElfSymbolType.Section && symbol.Section is { } s
                        && doomed.Contains(s));
                    break;
            }
        }

        Sections.RemoveAll(doomed.Contains);
        if (SectionNameTable is { } names && doomed.Contains(names))
        {
            SectionNameTable = null;
        }
    }
}
