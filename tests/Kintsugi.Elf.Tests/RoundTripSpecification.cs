using Kintsugi.Elf.Tests.Support;
using Kintsugi.Testing;

namespace Kintsugi.Elf.Tests;

public class RoundTripSpecification
{
    [Theory]
    [MemberData(nameof(CompiledSamples.Names), MemberType = typeof(CompiledSamples))]
    public void Unmodified_object_is_written_back_byte_identical(string variant)
    {
        byte[] original = CompiledSamples.BytesOf(variant);

        byte[] written = ElfObject.Read(original).ToArray();

        Assert.Equal(original, written);
    }

    [Theory]
    [MemberData(nameof(CompiledSamples.Names), MemberType = typeof(CompiledSamples))]
    public void Object_laid_out_anew_is_read_back_to_the_same_model(string variant)
    {
        var elf = ElfObject.Read(CompiledSamples.BytesOf(variant));
        // Adding a section forces a fresh layout and fresh string tables.
        elf.Sections.Add(new ElfDataSection(".kintsugi.marker", ElfSectionType.ProgBits, [1, 2, 3]));

        var reread = ElfObject.Read(elf.ToArray());

        Assert.Equal(Describe(elf), Describe(reread));
    }

    [Theory]
    [MemberData(nameof(CompiledSamples.Names), MemberType = typeof(CompiledSamples))]
    public void Object_laid_out_anew_is_accepted_by_readelf_and_ld(string variant)
    {
        using var temp = new TemporaryDirectory();
        var elf = ElfObject.Read(CompiledSamples.BytesOf(variant));
        elf.Sections.Insert(0, new ElfDataSection(".kintsugi.marker", ElfSectionType.ProgBits, [1, 2, 3]));
        string path = temp.File("relaid.o");
        elf.Save(path);

        var readelf = Tool.TryRunIn(temp.Path, "readelf", "-aW", path);
        Tool.Run("ld", "-r", path, "-o", temp.File("linked.o"));

        Assert.Equal(0, readelf.ExitCode);
        Assert.DoesNotContain("Warning", readelf.Error + readelf.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("Error", readelf.Error + readelf.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Twice_written_object_is_stable()
    {
        var elf = ElfObject.Read(CompiledSamples.BytesOf("cpp"));
        elf.SymbolTable!.Symbols[0].Name = "renamed_file_symbol.cpp";
        byte[] first = elf.ToArray();

        byte[] second = ElfObject.Read(first).ToArray();

        Assert.Equal(first, second);
    }

    /// <summary>A text form of everything the model holds, with sections and symbols named by index.</summary>
    internal static string Describe(ElfObject elf)
    {
        var text = new System.Text.StringBuilder();
        foreach (var section in elf.Sections)
        {
            text.AppendLine($"S{section.Index} {section.Name} {section.Type} {section.Flags} a{section.Alignment} " +
                $"e{section.EntrySize} l{section.Link?.Index} i{section.Info} is{section.InfoSection?.Index} " +
                $"size{(section is ElfStringTableSection ? "(derived)" : section.Size)}");
            switch (section)
            {
                case ElfDataSection data:
                    text.AppendLine(Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(data.Data)));
                    break;
                case ElfSymbolTableSection table:
                    foreach (var s in table.Symbols)
                    {
                        text.AppendLine($"  {s.Index} {s.Name} {s.Binding} {s.Type} {s.Other} {s.Section?.Index} " +
                            $"{s.SpecialSection} {s.Value} {s.Size}");
                    }

                    break;
                case ElfRelocationSection relocations:
                    text.AppendLine($"  target {relocations.Target?.Index}");
                    foreach (var r in relocations.Relocations)
                    {
                        text.AppendLine($"  {r.Offset} {r.Type} {r.Symbol?.Index} {r.Addend}");
                    }

                    break;
                case ElfGroupSection group:
                    text.AppendLine($"  {group.GroupFlags} {group.Signature?.Index} " +
                        $"{string.Join(',', group.Members.Select(m => m.Index))}");
                    break;
                case ElfNoteSection notes:
                    foreach (var n in notes.Notes)
                    {
                        text.AppendLine($"  {n.Name} {n.Type} {Convert.ToHexString(n.Descriptor.Span)}");
                    }

                    break;
            }
        }

        return text.ToString();
    }
}
