using Kintsugi.Diff;
using Kintsugi.Elf;

namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>
/// A function's machine code as compiled into a relocatable object, with a mask of the bytes relocations
/// fill in at link time: outside the mask, the code must equal the shipped kernel's byte for byte.
/// </summary>
public sealed class CompiledFunction
{
    public string Name { get; }
    public bool IsLocal { get; }
    public string SectionName { get; }
    public ulong Offset { get; }
    public byte[] Code { get; }
    public bool[] Relocated { get; }

    private CompiledFunction(string name, bool isLocal, string sectionName, ulong offset, byte[] code, bool[] relocated)
    {
        Name = name;
        IsLocal = isLocal;
        SectionName = sectionName;
        Offset = offset;
        Code = code;
        Relocated = relocated;
    }

    /// <summary>Every defined function of the object with its code and relocation mask.</summary>
    public static IReadOnlyList<CompiledFunction> ReadAll(ElfObject elf)
    {
        var result = new List<CompiledFunction>();
        if (elf.SymbolTable is not { } table) return result;
        var jumpSites = JumpLabelSites(elf);
        foreach (var symbol in table.Symbols)
        {
            if (symbol.Type != ElfSymbolType.Function || symbol.Section is not ElfDataSection section
                || symbol.Size == 0) continue;
            if (symbol.Value + symbol.Size > (ulong)section.Data.Length) continue;
            var code = section.Data.AsSpan((int)symbol.Value, (int)symbol.Size).ToArray();
            var mask = new bool[code.Length];
            // A static branch is a jmp the kernel turns into a nop and back at run time; on kernels whose objtool
            // runs only on the linked vmlinux (IBT), objtool also rewrites some of those jmps into nops there, so
            // the shipped bytes of a site may be either: the site is compared like a relocation, not byte for byte.
            foreach (var site in jumpSites.GetValueOrDefault(section) ?? [])
            {
                var at = (long)site - (long)symbol.Value;
                if (at < 0 || at >= code.Length) continue;
                var width = code[at] switch { 0xEB => 2, 0x66 => 2, _ => 5 };
                for (var i = 0; i < width && at + i < code.Length; i++) mask[at + i] = true;
            }
            foreach (var relocations in elf.GetRelocationSections(section))
                foreach (var relocation in relocations.Relocations)
                {
                    var width = relocation.Type.FieldWidth();
                    for (var i = 0; i < width; i++)
                    {
                        var at = (long)relocation.Offset + i - (long)symbol.Value;
                        if (at >= 0 && at < mask.Length) mask[at] = true;
                    }
                }
            result.Add(new CompiledFunction(symbol.Name, symbol.Binding == ElfSymbolBinding.Local, section.Name,
                symbol.Value, code, mask));
        }
        return result;
    }

    /// <summary>The code offsets of the object's static branch sites (the first field of each <c>__jump_table</c>
    /// entry), per section.</summary>
    private static Dictionary<ElfSection, List<ulong>> JumpLabelSites(ElfObject elf)
    {
        var sites = new Dictionary<ElfSection, List<ulong>>(ReferenceEqualityComparer.Instance);
        if (elf.FindSection(KernelNames.JumpTable) is not { } table) return sites;
        foreach (var relocations in elf.GetRelocationSections(table))
            foreach (var relocation in relocations.Relocations)
            {
                if (relocation.Offset % KernelNames.JumpEntrySize != 0 || relocation.Symbol?.Section is not { } code)
                    continue;
                var site = (long)relocation.Symbol.Value + relocation.Addend;
                if (site < 0) continue;
                if (!sites.TryGetValue(code, out var list)) sites[code] = list = [];
                list.Add((ulong)site);
            }
        return sites;
    }

    /// <summary>Whether <paramref name="shipped"/> is this function's code, ignoring relocated bytes.</summary>
    public bool Matches(ReadOnlySpan<byte> shipped)
    {
        if (shipped.Length < Code.Length) return false;
        for (var i = 0; i < Code.Length; i++)
            if (!Relocated[i] && Code[i] != shipped[i]) return false;
        return true;
    }

    /// <summary>The first differing byte offset, for messages; -1 when they match.</summary>
    public int FirstDifference(ReadOnlySpan<byte> shipped)
    {
        for (var i = 0; i < Code.Length; i++)
            if (i >= shipped.Length || (!Relocated[i] && Code[i] != shipped[i])) return i;
        return -1;
    }
}
