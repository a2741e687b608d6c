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
internal sealed class FunctionComparer(ObjectView original, ObjectView patched, IReadOnlySet<string> lineFunctions)
{
    public enum Verdict { Same, Different, LineNumbersOnly }

    /// <summary>
    /// struct _ddebug: four pointers (module, function, file, format), then <c>lineno:18</c> in the low bits of the
    /// next word.
    /// </summary>
    private const int DescriptorLineField = 32;
    private const uint DescriptorLineMask = (1u << 18) - 1;

    public Verdict CompareCode(DefinedSymbol before, DefinedSymbol after)
    {
        var code = CompareInstructions(before, after);
        if (code == Verdict.Different || before.Role != SymbolRole.Function) return code;
        return Combine(code, CompareTableEntries(before, after));
    }

    /// <summary>
    /// The verdict on two parts of one function together: any difference wins, then a line-only change.
    /// </summary>
    public static Verdict Combine(Verdict a, Verdict b) =>
        a == Verdict.Different || b == Verdict.Different ? Verdict.Different
        : a == Verdict.LineNumbersOnly || b == Verdict.LineNumbersOnly ? Verdict.LineNumbersOnly
        : Verdict.Same;

    private Verdict CompareInstructions(DefinedSymbol before, DefinedSymbol after)
    {
        if (before.Symbol.Size != after.Symbol.Size) return Verdict.Different;
        var relocationsBefore = original.RelocationsIn(before).ToList();
        var relocationsAfter = patched.RelocationsIn(after).ToList();
        if (relocationsBefore.Count != relocationsAfter.Count) return Verdict.Different;
        var descriptorLinesMoved = false;
        for (var i = 0; i < relocationsBefore.Count; i++)
        {
            var (a, b) = (relocationsBefore[i], relocationsAfter[i]);
            if (a.Offset - before.Start != b.Offset - after.Start || a.Type != b.Type) return Verdict.Different;
            if (Key(original, before.Section, a) == Key(patched, after.Section, b)) continue;
            // A pr_debug() descriptor holds its call's __LINE__: a moved line is not a change of the function.
            if (Key(original, before.Section, a, ignoreDescriptorLines: true)
                != Key(patched, after.Section, b, ignoreDescriptorLines: true)) return Verdict.Different;
            descriptorLinesMoved = true;
        }
        var codeBefore = Masked(before, relocationsBefore);
        var codeAfter = Masked(after, relocationsAfter);
        if (codeBefore.AsSpan().SequenceEqual(codeAfter))
            return descriptorLinesMoved ? Verdict.LineNumbersOnly : Verdict.Same;

        // Instruction by instruction: only differences in __LINE__ immediates passed to line-taking helpers are
        // forgiven.
        var instructionsBefore = Decode(codeBefore);
        var instructionsAfter = Decode(codeAfter);
        if (instructionsBefore.Count != instructionsAfter.Count) return Verdict.Different;
        for (var i = 0; i < instructionsBefore.Count; i++)
        {
            var (a, b) = (instructionsBefore[i], instructionsAfter[i]);
            if (a.Length != b.Length) return Verdict.Different;
            if (codeBefore.AsSpan((int)a.IP, a.Length).SequenceEqual(codeAfter.AsSpan((int)b.IP, b.Length))) continue;
            if (!IsLineArgument(a, b) || !CallsLineFunctionSoon(instructionsAfter, i, after, relocationsAfter))
                return Verdict.Different;
        }
        return Verdict.LineNumbersOnly;
    }

    /// <summary>
    /// A function's entries in the kernel's tables (its static branches' keys, its BUG/WARN flags, its exception
    /// fixups) are part of what it does: the same instructions testing another key, or a WARN_ON that became
    /// WARN_ON_ONCE, are a change. A moved __LINE__ in a bug entry is a line-only change.
    /// </summary>
    private Verdict CompareTableEntries(DefinedSymbol before, DefinedSymbol after)
    {
        _entriesBefore ??= TableEntries(original);
        _entriesAfter ??= TableEntries(patched);
        var a = _entriesBefore.GetValueOrDefault(before.Key) ?? [];
        var b = _entriesAfter.GetValueOrDefault(after.Key) ?? [];
        if (a.Count != b.Count) return Verdict.Different;
        var (sortedA, sortedB) = (a.OrderBy(e => e.Content, StringComparer.Ordinal).ToList(),
            b.OrderBy(e => e.Content, StringComparer.Ordinal).ToList());
        if (!sortedA.Select(e => e.Content).SequenceEqual(sortedB.Select(e => e.Content), StringComparer.Ordinal))
            return Verdict.Different;
        return sortedA.Select(e => e.Line).SequenceEqual(sortedB.Select(e => e.Line)) ? Verdict.Same
            : Verdict.LineNumbersOnly;
    }

    private Dictionary<SymbolKey, List<(string Content, int Line)>>? _entriesBefore, _entriesAfter;

    /// <summary>
    /// The tables whose entries say what their function does and name nothing but it, symbols and strings. Not the
    /// ftrace locations (one per function), nor tables pointing into shared unnamed code (.altinstr_replacement), where
    /// one function's edit would move every other function's entries.
    /// </summary>
    private static readonly HashSet<string> ComparedTables = new(StringComparer.Ordinal)
        { KernelNames.JumpTable, "__bug_table", "__ex_table", KernelNames.StaticCallSites };

    /// <summary>
    /// struct bug_entry (12 bytes with CONFIG_DEBUG_BUGVERBOSE): address, file, then the 16-bit __LINE__ at offset 8.
    /// </summary>
    private const int BugEntryLineField = 8;
    private const int BugEntryLineSize = 12;

    /// <summary>Each function's table entries (its .cold parts' included), by the function's key, in terms that survive
    /// recompilation.</summary>
    /// <remarks>An entry's content is the canonical text of its typed parts (table, owner, targets, bytes), for
    /// sorting.</remarks>
    private static Dictionary<SymbolKey, List<(string Content, int Line)>> TableEntries(ObjectView view)
    {
        var result = new Dictionary<SymbolKey, List<(string, int)>>();
        foreach (var section in view.Elf.Sections)
        {
            if (!ComparedTables.Contains(section.Name) || SpecialSections.Find(section.Name) is not { } table
                || section is not ElfDataSection) continue;
            var relocations = view.Relocations.GetValueOrDefault(section) ?? [];
            if (SpecialSections.EntrySize(table, section, relocations) is not { } size) continue;
            foreach (var entry in relocations.GroupBy(r => r.Offset / (ulong)size))
            {
                var fields = entry.ToList();
                var start = entry.Key * (ulong)size;
                if (fields[0].Offset != start
                    || view.Resolve(section, fields[0]) is not { Defined: { IsCode: true } owner } anchor) continue;
                var function = owner.OwnerKey;
                var bytes = ObjectView.Bytes(section, start, (ulong)size).ToArray();
                foreach (var field in fields)
                    bytes.AsSpan((int)(field.Offset - start),
                        Math.Min(field.Type.FieldWidth(), size - (int)(field.Offset - start))).Clear();
                var line = 0;
                if (section.Name == "__bug_table" && size == BugEntryLineSize)
                {
                    line = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(BugEntryLineField));
                    bytes.AsSpan(BugEntryLineField, 2).Clear();
                }
                var content = new StringBuilder().Append(section.Name).Append('@').Append(owner.Identity).Append('+')
                    .Append(anchor.Offset);
                // A pr_debug's static key lives inside its descriptor, whose line a moved message changes: the
                // code's own reference to the descriptor already reports that as a line-only change.
                foreach (var field in fields.Skip(1))
                    content.Append(';').Append(field.Offset - start).Append('=')
                        .Append(Key(view, section, field, ignoreDescriptorLines: true));
                content.Append(';').Append(Convert.ToHexString(bytes));
                if (!result.TryGetValue(function, out var list)) result[function] = list = [];
                list.Add((content.ToString(), line));
            }
        }
        return result;
    }

    public bool SameData(DefinedSymbol before, DefinedSymbol after)
    {
        if (before.Symbol.Size != after.Symbol.Size || before.Section.Type != after.Section.Type
            || before.Section.Flags.HasFlag(ElfSectionFlags.Write)
                != after.Section.Flags.HasFlag(ElfSectionFlags.Write))
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
    /// <param name="ignoreDescriptorLines">Compare dynamic-debug descriptors without their line numbers.</param>
    public static TargetKey Key(ObjectView view, ElfSection from, ElfRelocation relocation,
        bool ignoreDescriptorLines = false)
    {
        var target = view.Resolve(from, relocation);
        if (target.IsExternal) return new TargetKey(TargetKind.External, default, target.Symbol.Name, target.Offset);
        if (target.Defined is { } defined)
            return defined.Role switch
            {
                SymbolRole.Function or SymbolRole.ColdPart => new TargetKey(TargetKind.Function, defined.Identity, "",
                    target.Offset),
                SymbolRole.Special => new TargetKey(TargetKind.PerUse, default, KernelNames.WithoutNumber(defined.Name),
                    target.Offset, SpecialContent(view, defined, ignoreDescriptorLines)),
                _ => new TargetKey(TargetKind.Data, defined.Identity, "", target.Offset),
            };
        var section = target.Section!;
        if (ObjectView.IsStringSection(section))
            return new TargetKey(TargetKind.String, default, ObjectView.StringAt(section, target.Offset), 0);
        return new TargetKey(TargetKind.Section, default, section.Name, target.Offset, ContentHash(section));
    }

    /// <summary>
    /// A special static is the same when its contents are: a switch table's values, a descriptor's strings.
    /// </summary>
    private static string SpecialContent(ObjectView view, DefinedSymbol special, bool ignoreDescriptorLines)
    {
        var builder = new StringBuilder();
        foreach (var relocation in view.RelocationsIn(special))
        {
            var target = view.Resolve(special.Section, relocation);
            builder.Append(relocation.Offset - special.Start).Append(':');
            builder.Append(target switch
            {
                { IsExternal: true } => "ext:" + target.Symbol.Name,
                { Defined: { Role: SymbolRole.Special } d } => "special:" + KernelNames.WithoutNumber(d.Name),
                { Defined: { } d } => d.Identity.ToString(),
                _ when ObjectView.IsStringSection(target.Section!) =>
                    "str:" + ObjectView.StringAt(target.Section!, target.Offset),
                _ => target.Section!.Name,
            }).Append('+').Append(target.Offset).Append(';');
        }
        if (special.Section is ElfDataSection)
        {
            var bytes = Masked(special, view.RelocationsIn(special).ToList());
            if (ignoreDescriptorLines && KernelNames.IsDebugDescriptor(special.Name, special.Section.Name)
                && bytes.Length >= DescriptorLineField + 4)
            {
                var word =
                    BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(DescriptorLineField)) & ~DescriptorLineMask;
                BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(DescriptorLineField), word);
            }
            builder.Append(Convert.ToHexString(bytes));
        }
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(builder.ToString())))[..16];
    }

    private static string ContentHash(ElfSection section) =>
        section is ElfDataSection data ? Convert.ToHexString(SHA256.HashData(data.Data))[..16]
            : section.Size.ToString();

    /// <summary>The symbol's bytes with every relocation field zeroed.</summary>
    private static byte[] Masked(DefinedSymbol defined, List<ElfRelocation> relocations)
    {
        var bytes = ObjectView.Bytes(defined.Section, defined.Start, defined.Symbol.Size).ToArray();
        foreach (var relocation in relocations)
        {
            var at = (int)(relocation.Offset - defined.Start);
            var width = Math.Min(relocation.Type.FieldWidth(), bytes.Length - at);
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

    /// <summary>
    /// A 32-bit immediate loaded into the second or third argument register: how __LINE__ reaches a helper.
    /// </summary>
    private static bool IsLineArgument(Instruction before, Instruction after) =>
        before.Code == after.Code && before.Code == Code.Mov_r32_imm32
        && before.Op0Register == after.Op0Register && before.Op0Register is Register.ESI or Register.EDX
            or Register.ECX;

    /// <summary>
    /// Whether the immediate loaded at <paramref name="index"/> is an argument of a line-taking helper: the next call
    /// (a call clobbers the argument registers, so only the next one can receive it) is to such a helper, and
    /// nothing in between reads or overwrites the register. A constant passed to another function is a real change.
    /// </summary>
    private bool CallsLineFunctionSoon(List<Instruction> instructions, int index, DefinedSymbol function,
        List<ElfRelocation> relocations)
    {
        var register = instructions[index].Op0Register.GetFullRegister();
        for (var i = index + 1; i < Math.Min(instructions.Count, index + 12); i++)
        {
            var instruction = instructions[i];
            if (instruction.FlowControl is FlowControl.Call or FlowControl.UnconditionalBranch)
            {
                var site = function.Start + instruction.IP;
                var relocation = relocations.FirstOrDefault(r => r.Offset >= site && r.Offset < site
                    + (ulong)instruction.Length);
                if (relocation is null) return false;
                var target = patched.Resolve(function.Section, relocation);
                var name = target.IsExternal ? target.Symbol.Name : target.Defined?.Name;
                return name is not null && lineFunctions.Contains(name);
            }
            if (instruction.FlowControl != FlowControl.Next) return false;
            if (_registers.GetInfo(instruction).GetUsedRegisters()
                .Any(used => used.Register.GetFullRegister() == register)) return false;
        }
        return false;
    }

    private readonly InstructionInfoFactory _registers = new();
}

internal enum TargetKind { External, Function, Data, PerUse, String, Section }

/// <summary>
/// What a relocation points at, in terms that survive recompilation: an external symbol, a correlated function or
/// object (by its <see cref="DefinedSymbol.Identity"/>), a per-use static by its base name and contents, a literal
/// string by its text, or a place in an unnamed section by its contents. Two relocations are alike when these are.
/// </summary>
/// <param name="Name">The external symbol's name, a per-use static's base name, the string, or the section's
/// name.</param>
/// <param name="Content">A digest of a per-use static's or an unnamed section's contents.</param>
internal readonly record struct TargetKey(TargetKind Kind, SymbolKey Symbol, string Name, long Offset,
    string Content = "")
{
    public override string ToString() => Kind switch
    {
        TargetKind.External => $"ext:{Name}+{Offset}",
        TargetKind.Function => $"fn:{Symbol}+{Offset}",
        TargetKind.Data => $"data:{Symbol}+{Offset}",
        TargetKind.PerUse => $"special:{Name}:{Content}+{Offset}",
        TargetKind.String => "str:" + Name,
        _ => $"sec:{Name}+{Offset}:{Content}",
    };
}
