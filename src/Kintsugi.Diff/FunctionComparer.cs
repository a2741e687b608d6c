using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Iced.Intel;
using Kintsugi.Elf;

namespace Kintsugi.Diff;

/// <summary>
/// Compares a function or data object of the original with its counterpart in the patched object:
/// instruction by instruction, with every relocation compared by what it really points at rather than by
/// symbol indexes, section offsets or static-local numbers, which change whenever anything else in the
/// unit changes.
/// </summary>
internal sealed class FunctionComparer(ObjectView original, ObjectView patched)
{
    /// <summary>Functions whose arguments include __LINE__ (WARN, might_sleep, printk helpers): a moved line changes only an immediate.</summary>
    private static readonly HashSet<string> LineFunctions = new(StringComparer.Ordinal)
    {
        "__warn_printk", "warn_slowpath_fmt", "__might_sleep", "__might_resched", "__might_fault", "__cant_sleep", "__cant_migrate",
        "lockdep_rcu_suspicious", "_printk", "printk", "__dynamic_pr_debug", "__dynamic_dev_dbg", "__dynamic_netdev_dbg",
        "rcu_read_lock_held", "__kasan_check_read", "___might_sleep", "__warn", "report_bug",
    };

    public enum Verdict { Same, Different, LineNumbersOnly }

    public Verdict CompareCode(DefinedSymbol before, DefinedSymbol after)
    {
        if (before.Symbol.Size != after.Symbol.Size) return Verdict.Different;
        var relocationsBefore = original.RelocationsIn(before).ToList();
        var relocationsAfter = patched.RelocationsIn(after).ToList();
        if (relocationsBefore.Count != relocationsAfter.Count) return Verdict.Different;
        for (var i = 0; i < relocationsBefore.Count; i++)
        {
            var (a, b) = (relocationsBefore[i], relocationsAfter[i]);
            if (a.Offset - before.Start != b.Offset - after.Start || a.Type != b.Type) return Verdict.Different;
            if (Key(original, before.Section, a) != Key(patched, after.Section, b)) return Verdict.Different;
        }
        var codeBefore = Masked(before, relocationsBefore);
        var codeAfter = Masked(after, relocationsAfter);
        if (codeBefore.AsSpan().SequenceEqual(codeAfter)) return Verdict.Same;

        // Instruction by instruction: only differences in __LINE__ immediates passed to line-taking helpers are forgiven.
        var instructionsBefore = Decode(codeBefore);
        var instructionsAfter = Decode(codeAfter);
        if (instructionsBefore.Count != instructionsAfter.Count) return Verdict.Different;
        for (var i = 0; i < instructionsBefore.Count; i++)
        {
            var (a, b) = (instructionsBefore[i], instructionsAfter[i]);
            if (a.Length != b.Length) return Verdict.Different;
            if (codeBefore.AsSpan((int)a.IP, a.Length).SequenceEqual(codeAfter.AsSpan((int)b.IP, b.Length))) continue;
            if (!IsLineArgument(a, b) || !CallsLineFunctionSoon(instructionsAfter, i, after, relocationsAfter)) return Verdict.Different;
        }
        return Verdict.LineNumbersOnly;
    }

    public bool SameData(DefinedSymbol before, DefinedSymbol after)
    {
        if (before.Symbol.Size != after.Symbol.Size || before.Section.Type != after.Section.Type
            || before.Section.Flags.HasFlag(ElfSectionFlags.Write) != after.Section.Flags.HasFlag(ElfSectionFlags.Write))
            return false;
        var relocationsBefore = original.RelocationsIn(before).ToList();
        var relocationsAfter = patched.RelocationsIn(after).ToList();
        if (relocationsBefore.Count != relocationsAfter.Count) return false;
        for (var i = 0; i < relocationsBefore.Count; i++)
        {
            var (a, b) = (relocationsBefore[i], relocationsAfter[i]);
            if (a.Offset - before.Start != b.Offset - after.Start || a.Type != b.Type) return false;
            if (Key(original, before.Section, a) != Key(patched, after.Section, b)) return false;
        }
        if (before.Section is ElfNoBitsSection) return true;
        return Masked(before, relocationsBefore).AsSpan().SequenceEqual(Masked(after, relocationsAfter));
    }

    /// <summary>What a relocation points at, in terms that survive recompilation.</summary>
    public static string Key(ObjectView view, ElfSection from, ElfRelocation relocation)
    {
        var target = view.Resolve(from, relocation);
        if (target.IsExternal) return $"ext:{target.Symbol.Name}+{target.Offset}";
        if (target.Defined is { } defined)
            return defined.Role switch
            {
                SymbolRole.Function or SymbolRole.ColdPart => $"fn:{defined.Key}+{target.Offset}",
                SymbolRole.Special => $"special:{ObjectView.SpecialBase(defined.Name)}:{SpecialContent(view, defined)}+{target.Offset}",
                _ => $"data:{defined.Key}+{target.Offset}",
            };
        var section = target.Section!;
        if (ObjectView.IsStringSection(section)) return "str:" + ObjectView.StringAt(section, target.Offset);
        return $"sec:{section.Name}+{target.Offset}:{ContentHash(section)}";
    }

    /// <summary>A special static is the same when its contents are: a switch table's values, a descriptor's strings.</summary>
    private static string SpecialContent(ObjectView view, DefinedSymbol special)
    {
        var builder = new StringBuilder();
        foreach (var relocation in view.RelocationsIn(special))
        {
            var target = view.Resolve(special.Section, relocation);
            builder.Append(relocation.Offset - special.Start).Append(':');
            builder.Append(target switch
            {
                { IsExternal: true } => "ext:" + target.Symbol.Name,
                { Defined: { Role: SymbolRole.Special } d } => "special:" + ObjectView.SpecialBase(d.Name),
                { Defined: { } d } => d.Key,
                _ when ObjectView.IsStringSection(target.Section!) => "str:" + ObjectView.StringAt(target.Section!, target.Offset),
                _ => target.Section!.Name,
            }).Append('+').Append(target.Offset).Append(';');
        }
        if (special.Section is ElfDataSection)
        {
            var bytes = Masked(special, view.RelocationsIn(special).ToList());
            // A dynamic debug descriptor records its pr_debug's line in the 18 bits after its four string pointers:
            // a message that only moved down the file is the same message (a WARN's line lives in __bug_table instead).
            if (special.Section.Name == "__dyndbg" && bytes.Length >= 36)
                BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(32), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(32)) & ~0x3FFFFu);
            builder.Append(Convert.ToHexString(bytes));
        }
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(builder.ToString())))[..16];
    }

    private static string ContentHash(ElfSection section) =>
        section is ElfDataSection data ? Convert.ToHexString(SHA256.HashData(data.Data))[..16] : section.Size.ToString();

    /// <summary>The symbol's bytes with every relocation field zeroed.</summary>
    private static byte[] Masked(DefinedSymbol defined, List<ElfRelocation> relocations)
    {
        var bytes = ObjectView.Bytes(defined.Section, defined.Start, defined.Symbol.Size).ToArray();
        foreach (var relocation in relocations)
        {
            var at = (int)(relocation.Offset - defined.Start);
            var width = Math.Min(ObjectView.FieldWidth(relocation.Type), bytes.Length - at);
            if (at >= 0 && width > 0) bytes.AsSpan(at, width).Clear();
        }
        return bytes;
    }

    private static List<Instruction> Decode(byte[] code)
    {
        var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(code));
        decoder.IP = 0;
        var instructions = new List<Instruction>();
        while (decoder.IP < (ulong)code.Length)
        {
            decoder.Decode(out var instruction);
            instructions.Add(instruction);
        }
        return instructions;
    }

    /// <summary>A 32-bit immediate loaded into the second or third argument register: how __LINE__ reaches a helper.</summary>
    private static bool IsLineArgument(Instruction before, Instruction after) =>
        before.Code == after.Code && before.Code == Code.Mov_r32_imm32
        && before.Op0Register == after.Op0Register && before.Op0Register is Register.ESI or Register.EDX or Register.ECX;

    /// <summary>
    /// Whether the immediate reaches a line-taking helper: the first call (or tail jump) after it consumes the
    /// argument registers, so it must be that helper. Any other call, a local jump the scan cannot follow, a
    /// return or an indirect transfer means the value went elsewhere, and the change is real.
    /// </summary>
    private bool CallsLineFunctionSoon(List<Instruction> instructions, int index, DefinedSymbol function, List<ElfRelocation> relocations)
    {
        for (var i = index + 1; i < Math.Min(instructions.Count, index + 12); i++)
        {
            var instruction = instructions[i];
            if (instruction.FlowControl is FlowControl.Return or FlowControl.IndirectBranch or FlowControl.IndirectCall or FlowControl.Interrupt) return false;
            if (instruction.FlowControl is not (FlowControl.Call or FlowControl.UnconditionalBranch)) continue;
            var site = function.Start + instruction.IP;
            var relocation = relocations.FirstOrDefault(r => r.Offset >= site && r.Offset < site + (ulong)instruction.Length);
            if (relocation is null) return false;
            var target = patched.Resolve(function.Section, relocation);
            var name = target.IsExternal ? target.Symbol.Name : target.Defined?.Name;
            return name is not null && LineFunctions.Contains(name);
        }
        return false;
    }
}
