using System.Buffers.Binary;
using System.Text;
using Iced.Intel;
using Kintsugi.Elf;

namespace Kintsugi.Diff;

internal enum SymbolRole
{
    Function,
    /// <summary>A <c>.cold</c> part: belongs to its parent function.</summary>
    ColdPart,
    Data,
    /// <summary>
    /// A static the compiler makes per use (__func__, once flags, lock keys, switch tables, debug descriptors): never
    /// correlated or bound, copied when used.
    /// </summary>
    Special,
}

/// <summary>
/// A function or data object defined in one of the two objects, under the key that correlates it with its counterpart
/// and, once the objects are correlated, linked to that counterpart (its twin).
/// </summary>
internal sealed class DefinedSymbol(ElfSymbol symbol, SymbolKey key, SymbolRole role, string? parent)
{
    public ElfSymbol Symbol { get; } = symbol;

    /// <summary>
    /// Set when the symbol is indexed; a numbered static's once its users are known (<see cref="Number"/>).
    /// </summary>
    public SymbolKey Key { get; private set; } = key;

    public SymbolRole Role { get; } = role;

    /// <summary>For a cold part, its parent function's name.</summary>
    public string? Parent { get; } = parent;

    /// <summary>For a cold part, its parent function's key.</summary>
    public SymbolKey ParentKey => SymbolKey.Named(Parent!);

    /// <summary>The function this code belongs to: itself, or a cold part's parent.</summary>
    public SymbolKey OwnerKey => Role == SymbolRole.ColdPart ? ParentKey : Key;

    /// <summary>For a numbered static local, the functions (by name) that use it.</summary>
    public IReadOnlySet<string>? Users { get; private set; }

    /// <summary>
    /// The same function or object in the other compilation, linked once (<see cref="Correlation"/>), or null.
    /// </summary>
    public DefinedSymbol? Twin { get; private set; }

    /// <summary>
    /// What this symbol is compared by: its own key in the original, its twin's in the patched object (a numbered
    /// static matched by its users has a different key of its own).
    /// </summary>
    public SymbolKey Identity => InPatched && Twin is { } twin ? twin.Key : Key;

    /// <summary>Whether the symbol is the patched object's.</summary>
    public bool InPatched { get; init; }
    public ElfSection Section => Symbol.Section!;
    public string Name => Symbol.Name;
    public bool IsLocal => Symbol.Binding == ElfSymbolBinding.Local;
    public ulong Start => Symbol.Value;
    public ulong End => Symbol.Value + Symbol.Size;
    public bool IsCode => Role is SymbolRole.Function or SymbolRole.ColdPart;

    /// <summary>Gives a numbered static its key, once its users are known.</summary>
    public void Number(SymbolKey key, IReadOnlySet<string> users)
    {
        if (Key.Kind == SymbolKeyKind.NumberedStatic) throw new InvalidOperationException($"{Name} is numbered twice");
        Key = key;
        Users = users;
    }

    /// <summary>Links an original symbol with its patched counterpart; each is linked at most once.</summary>
    public static void Link(DefinedSymbol original, DefinedSymbol patched)
    {
        if (original.Twin is not null || patched.Twin is not null || original.InPatched || !patched.InPatched)
            throw new InvalidOperationException($"{original} and {patched} cannot be linked: each links once, to the " +
                "other side");
        original.Twin = patched;
        patched.Twin = original;
    }

    public override string ToString() => $"{Role} {Name} ({Key})";
}

/// <summary>Where a relocation really points: a defined symbol and the offset in it, or an external symbol.</summary>
internal readonly record struct RelocationTarget(ElfSymbol Symbol, DefinedSymbol? Defined, ElfSection? Section,
    long Offset)
{
    public bool IsExternal => Defined is null && Section is null;
}

/// <summary>
/// One compilation of a translation unit, indexed for the differ: its functions and data under correlation
/// keys, relocations by section, and where each relocation really points (PC-relative relocations in code
/// are corrected by the length of the rest of their instruction, decoded with Iced).
/// </summary>
internal sealed class ObjectView
{
    private readonly Dictionary<ElfSection, List<ulong>> _instructionEnds = new(ReferenceEqualityComparer.Instance);

    public ElfObject Elf { get; }
    public ElfSymbolTableSection Table { get; }
    public Dictionary<SymbolKey, DefinedSymbol> ByKey { get; } = [];
    public Dictionary<ElfSymbol, DefinedSymbol> BySymbol { get; } = new(ReferenceEqualityComparer.Instance);
    public Dictionary<ElfSection, List<ElfRelocation>> Relocations { get; } = new(ReferenceEqualityComparer.Instance);
    public Dictionary<ElfSection, List<DefinedSymbol>> DefinedIn { get; } = new(ReferenceEqualityComparer.Instance);
    /// <summary>The numbered static locals (<c>count.12</c>), keyed by base name and users.</summary>
    public List<DefinedSymbol> NumberedStatics { get; } = [];
    /// <summary>The .cold parts of each function, by the parent's key.</summary>
    public ILookup<SymbolKey, DefinedSymbol> ColdParts { get; private set; } =
        Enumerable.Empty<DefinedSymbol>().ToLookup(d => d.Key);

    /// <summary>Whether this is the patched object (the other is the original).</summary>
    public bool IsPatched { get; }

    public ObjectView(ElfObject elf, bool patched)
    {
        Elf = elf;
        IsPatched = patched;
        Table = elf.SymbolTable
            ?? throw new DiffException($"the {(patched ? "patched" : "original")} object has no symbol table");
        foreach (var relocations in elf.Sections.OfType<ElfRelocationSection>())
        {
            // Debug information is most of a kernel object's relocations, and nothing of it goes into a livepatch.
            if (relocations.Target is null || relocations.Flags.HasFlag(ElfSectionFlags.RelaLivepatch)
                || !relocations.Target.Flags.HasFlag(ElfSectionFlags.Alloc)) continue;
            if (!Relocations.TryGetValue(relocations.Target, out var list)) Relocations[relocations.Target] = list = [];
            list.AddRange(relocations.Relocations);
        }
        foreach (var list in Relocations.Values) list.Sort((a, b) => a.Offset.CompareTo(b.Offset));

        var numbered = new List<DefinedSymbol>();
        foreach (var symbol in Table.Symbols)
        {
            if (symbol.Section is null || symbol.Name.Length == 0) continue;
            if (symbol.Type == ElfSymbolType.Function)
            {
                if (KernelNames.IsPadding(symbol.Name)) continue;
                var parent = KernelNames.ColdPartParent(symbol.Name);
                var role = parent is null ? SymbolRole.Function : SymbolRole.ColdPart;
                Add(new DefinedSymbol(symbol, SymbolKey.Named(symbol.Name), role, parent) { InPatched = patched });
            }
            else if (symbol.Type is ElfSymbolType.Object or ElfSymbolType.Tls
                || (symbol.Type == ElfSymbolType.NoType && IsDataSection(symbol.Section)
                && !symbol.Name.StartsWith('.')))
            {
                if (KernelNames.IsPerUseStatic(symbol))
                    Add(new DefinedSymbol(symbol, SymbolKey.PerUse(symbol.Name), SymbolRole.Special,
                        null)
                    { InPatched = patched });
                else if (symbol.Binding == ElfSymbolBinding.Local
                    && KernelNames.IsNumberedStatic(symbol.Name, out _, out _))
                {
                    var defined = new DefinedSymbol(symbol, SymbolKey.Named(symbol.Name), SymbolRole.Data, null)
                    {
                        InPatched = patched,
                    };
                    numbered.Add(defined);
                    Track(defined);
                }
                else Add(new DefinedSymbol(symbol, SymbolKey.Named(symbol.Name), SymbolRole.Data,
                    null)
                { InPatched = patched });
            }
        }
        foreach (var list in DefinedIn.Values) list.Sort((a, b) => a.Start.CompareTo(b.Start));
        KeyNumberedStatics(numbered);
        ColdParts = ByKey.Values.Where(d => d.Role == SymbolRole.ColdPart).ToLookup(d => d.ParentKey);
    }

    private void Add(DefinedSymbol defined)
    {
        // Duplicate keys (a symbol listed twice) keep the first: the differ compares one of each.
        ByKey.TryAdd(defined.Key, defined);
        Track(defined);
    }

    private void Track(DefinedSymbol defined)
    {
        BySymbol[defined.Symbol] = defined;
        if (!DefinedIn.TryGetValue(defined.Section, out var list)) DefinedIn[defined.Section] = list = [];
        list.Add(defined);
    }

    /// <summary>
    /// Numbered static locals (<c>count.12</c>) get new numbers whenever the unit changes; they are matched
    /// by base name and the functions that use them, which is what identifies a function's static.
    /// </summary>
    private void KeyNumberedStatics(List<DefinedSymbol> numbered)
    {
        var users = new Dictionary<DefinedSymbol, SortedSet<string>>(ReferenceEqualityComparer.Instance);
        foreach (var defined in numbered) users[defined] = new SortedSet<string>(StringComparer.Ordinal);
        // Only relocations into a section holding a numbered static can reach one: resolving the others costs a decode
        // of every function.
        var holders = numbered.Select(d => d.Section).ToHashSet(ReferenceEqualityComparer.Instance);
        foreach (var function in ByKey.Values.Where(d => d.IsCode))
            foreach (var relocation in RelocationsIn(function))
                if (relocation.Symbol?.Section is { } section && holders.Contains(section)
                    && Resolve(function.Section, relocation).Defined is { } target
                    && users.TryGetValue(target, out var set))
                    set.Add(function.OwnerKey.Name);
        // Grouped by base name and users (a key of rank 0), then ranked by number within each group.
        foreach (var group in numbered.GroupBy(d =>
            SymbolKey.NumberedStatic(KernelNames.WithoutNumber(d.Name), users[d], 0)))
        {
            var rank = 0;
            foreach (var defined in group.OrderBy(d =>
                KernelNames.IsNumberedStatic(d.Name, out _, out var number) ? number : 0))
            {
                defined.Number(SymbolKey.NumberedStatic(group.Key.Name, group.Key.Users, rank++), users[defined]);
                ByKey.TryAdd(defined.Key, defined);
                NumberedStatics.Add(defined);
            }
        }
    }

    public static bool IsDataSection(ElfSection section) =>
        section.Flags.HasFlag(ElfSectionFlags.Alloc) && !section.Flags.HasFlag(ElfSectionFlags.ExecInstr);

    public static bool IsStringSection(ElfSection section) =>
        section.Flags.HasFlag(ElfSectionFlags.Strings)
            || section.Name.StartsWith(".rodata.str", StringComparison.Ordinal);

    public IEnumerable<ElfRelocation> RelocationsIn(DefinedSymbol defined) =>
        RelocationsIn(defined.Section, defined.Start, Math.Max(defined.End, defined.Start + 1));

    public IEnumerable<ElfRelocation> RelocationsIn(ElfSection section, ulong start, ulong end)
    {
        if (!Relocations.TryGetValue(section, out var list)) yield break;
        foreach (var relocation in list)
            if (relocation.Offset >= start && relocation.Offset < end) yield return relocation;
    }

    /// <summary>Where a relocation in <paramref name="from"/> really points.</summary>
    public RelocationTarget Resolve(ElfSection from, ElfRelocation relocation)
    {
        var symbol = relocation.Symbol
            ?? throw new DiffException($"a relocation at {from.Name}+0x{relocation.Offset:x} has no symbol");
        var offset = relocation.Addend;
        // A PC-relative displacement is relative to the end of its instruction, not to the field.
        if (relocation.Type.IsPcRelative() && from.Flags.HasFlag(ElfSectionFlags.ExecInstr))
            offset += (long)(InstructionEnd(from, relocation.Offset) - relocation.Offset);
        if (symbol.Section is null) return new RelocationTarget(symbol, null, null, offset);
        if (symbol.Type == ElfSymbolType.Section)
        {
            var sectionOffset = offset;
            return Covering(symbol.Section, sectionOffset) is { } covering
                ? new RelocationTarget(symbol, covering, symbol.Section, sectionOffset - (long)covering.Start)
                : new RelocationTarget(symbol, null, symbol.Section, sectionOffset);
        }
        return BySymbol.TryGetValue(symbol, out var defined)
            ? new RelocationTarget(symbol, defined, symbol.Section, offset)
            : new RelocationTarget(symbol, null, symbol.Section, offset + (long)symbol.Value);
    }

    /// <summary>
    /// The function or object whose extent holds <paramref name="offset"/> of <paramref name="section"/>.
    /// </summary>
    public DefinedSymbol? Covering(ElfSection section, long offset)
    {
        if (!DefinedIn.TryGetValue(section, out var list)) return null;
        DefinedSymbol? best = null;
        foreach (var defined in list)
        {
            if ((long)defined.Start > offset) break;
            if (offset < (long)defined.End || ((long)defined.Start == offset && best is null)) best = defined;
        }
        // A reference just past an object (an end pointer) still belongs to it when nothing else starts there.
        if (best is null && list.LastOrDefault(d => (long)d.End == offset) is { } ending) best = ending;
        return best;
    }

    /// <summary>The end of the instruction that contains <paramref name="fieldOffset"/>, decoded with Iced.</summary>
    public ulong InstructionEnd(ElfSection code, ulong fieldOffset)
    {
        if (!_instructionEnds.TryGetValue(code, out var ends)) _instructionEnds[code] = ends = DecodeEnds(code);
        // The first instruction end past the field is the end of the instruction holding it.
        int low = 0, high = ends.Count - 1, found = -1;
        while (low <= high)
        {
            var middle = (low + high) / 2;
            if (ends[middle] > fieldOffset) { found = middle; high = middle - 1; }
            else low = middle + 1;
        }
        // A field the decoder cannot place (data inside code) is taken as a 4-byte displacement ending its instruction.
        return found < 0 ? fieldOffset + 4 : ends[found];
    }

    /// <summary>The end of every instruction, in ascending order (the decoder only moves forward).</summary>
    private static List<ulong> DecodeEnds(ElfSection code)
    {
        var ends = new List<ulong>();
        if (code is not ElfDataSection data) return ends;
        var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(data.Data));
        decoder.IP = 0;
        while (decoder.IP < (ulong)data.Data.Length)
        {
            decoder.Decode(out var instruction);
            ends.Add(instruction.NextIP);
        }
        return ends;
    }

    /// <summary>
    /// The bytes of a symbol's extent, or nothing when the extent (as the symbol claims it) is not inside the section.
    /// </summary>
    public static ReadOnlySpan<byte> Bytes(ElfSection section, ulong start, ulong length) =>
        section is ElfDataSection data && start <= (ulong)data.Data.Length && length <= (ulong)data.Data.Length - start
            ? data.Data.AsSpan((int)start, (int)length) : default;

    /// <summary>The NUL-terminated string at <paramref name="offset"/> of a string section.</summary>
    public static string StringAt(ElfSection section, long offset)
    {
        if (section is not ElfDataSection data || offset < 0 || offset >= data.Data.Length)
            return $"<{section.Name}+{offset}>";
        var span = data.Data.AsSpan((int)offset);
        var end = span.IndexOf((byte)0);
        return Encoding.Latin1.GetString(end < 0 ? span : span[..end]);
    }

    public static ulong ReadField(ReadOnlySpan<byte> bytes, int width) => width switch
    {
        8 => BinaryPrimitives.ReadUInt64LittleEndian(bytes),
        4 => BinaryPrimitives.ReadUInt32LittleEndian(bytes),
        2 => BinaryPrimitives.ReadUInt16LittleEndian(bytes),
        _ => bytes[0],
    };
}
