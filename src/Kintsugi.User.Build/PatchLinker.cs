using System.Buffers.Binary;
using System.Security.Cryptography;
using Kintsugi.Elf;

namespace Kintsugi.User.Build;

/// <summary>
/// Links replacement functions, compiled as a position-independent relocatable object with one section per
/// function, into a <see cref="UserPatch"/> for one exact target object. What the replacement code refers to is
/// bound the way the target's own code is bound:
/// <list type="bullet">
/// <item>functions and data of the target (static or global) to the target's own copy, by address in the
///   target: a patch never gets a second copy of the program's state;</item>
/// <item>imported functions and data through the target's own GOT slots (the same interposition, symbol
///   version and IFUNC choice the dynamic linker made for the original code);</item>
/// <item>anything else the target does not import by name from the process's dynamic symbols;</item>
/// <item>new read-only data (string literals, tables), new functions, and the cold parts of replaced
///   functions into the patch itself.</item>
/// </list>
/// What cannot be bound this way is refused with the rule it breaks.
/// </summary>
public sealed class PatchLinker
{
    private readonly ElfImage _target;
    private readonly IReadOnlyList<ElfObject> _units;
    private readonly Dictionary<ElfSection, ElfObject> _unitOf = [];
    private readonly HashSet<string> _replaced;
    private readonly Dictionary<string, List<ElfImageSymbol>> _targetSymbols = [];
    private readonly Dictionary<string, ulong> _gotSlots = [];
    private readonly List<ElfSection> _included = [];
    private readonly Dictionary<ElfSection, ulong> _offsets = [];
    private readonly List<byte> _code = [];
    private readonly List<PatchRelocation> _relocations = [];
    private readonly Dictionary<string, uint> _thunks = [];
    private readonly Dictionary<(RelocationBase, ulong, string?), uint> _slots = [];

    private PatchLinker(ElfImage target, IReadOnlyList<ElfObject> units, IEnumerable<string> replaced,
        IReadOnlyList<ElfImageSymbol> located)
    {
        _target = target;
        _units = units;
        foreach (var unit in units)
            foreach (var section in unit.Sections)
                _unitOf[section] = unit;
        _replaced = [.. replaced];
        foreach (var symbol in target.Symbols(dynamic: false).Concat(target.Symbols(dynamic: true)).Concat(located))
        {
            if (!symbol.Defined || symbol.Name.Length == 0
                || symbol.Type is not (ElfImageSymbol.TypeFunction or ElfImageSymbol.TypeObject)) continue;
            var list = _targetSymbols.TryGetValue(symbol.Name, out var l) ? l : _targetSymbols[symbol.Name] = [];
            if (!list.Any(s => s.Value == symbol.Value)) list.Add(symbol);
        }
        foreach (var r in target.DynamicRelocations())
            if (r.Type is ElfDynamicRelocation.GlobDat or ElfDynamicRelocation.JumpSlot && r.SymbolName.Length > 0)
                _gotSlots.TryAdd(r.SymbolName, r.Offset);
    }

    /// <summary>Links <paramref name="functions"/> of the compiled object into a patch for the target object.</summary>
    /// <param name="located">Functions of the target its symbol tables do not name, found by the builder by their
    /// code.</param>
    public static UserPatch Link(string targetPath, string patchObjectPath, IReadOnlyList<string> functions,
        string name, string? description = null,
        IReadOnlyList<ElfImageSymbol>? located = null) =>
        Link(targetPath, [patchObjectPath], functions, name, description, located);

    /// <summary>Links <paramref name="functions"/> of one or more compiled units into one patch for the target
    /// object.</summary>
    public static UserPatch
        Link(string targetPath, IReadOnlyList<string> patchObjectPaths, IReadOnlyList<string> functions, string name,
        string? description, IReadOnlyList<ElfImageSymbol>? located)
    {
        var target = ElfImage.Load(targetPath);
        var buildId = target.BuildId ?? throw new UserBuildException($"{targetPath} has no GNU build-id, so a patch " +
            $"could not identify it in a process");
        var units = new List<ElfObject>();
        foreach (var path in patchObjectPaths)
        {
            try { units.Add(ElfObject.Load(path)); }
            catch (ElfFormatException e) { throw new UserBuildException($"{path}: {e.Message}", e); }
        }
        return new PatchLinker(target, units, functions, located ?? [])
            .Link(buildId, Path.GetFileName(targetPath), functions, name, description);
    }

    private UserPatch
        Link(BuildId buildId, string objectName, IReadOnlyList<string> functions, string name, string? description)
    {
        var records = new List<(string Name, ElfImageSymbol Original, ElfSymbol Replacement)>();
        foreach (var function in functions)
        {
            var replacement = _units.SelectMany(u => u.SymbolTable?.Symbols.AsEnumerable() ?? [])
                .FirstOrDefault(s => s.Name == function && s.Type == ElfSymbolType.Function && s.Section is not null)
                ?? throw new UserBuildException($"the compiled fix defines no function {function}");
            var original = UniqueTargetFunction(function)
                ?? throw new UserBuildException($"{objectName} has no function {function} (inlined into its callers " +
                $"everywhere? patch the callers instead)");
            if (original.Size < UserPatch.RedirectSize)
                throw new UserBuildException($"{function} is {original.Size} bytes in {objectName}: too short for " +
                    $"the {UserPatch.RedirectSize}-byte jump " +
                    "that redirects it (rule: functions shorter than 5 bytes cannot be patched; patch its callers)");
            Include(replacement.Section!);
            records.Add((function, original, replacement));
        }
        // Sections are included as relocations reach them; the list grows while it is walked.
        for (var i = 0; i < _included.Count; i++) LinkSection(_included[i]);
        var replaced = records.Select(r => new ReplacedFunction(r.Name, r.Original.Value, (uint)r.Original.Size,
            Convert.ToHexStringLower(SHA256.HashData(_target.ReadAt(r.Original.Value, r.Original.Size))),
            (uint)(_offsets[r.Replacement.Section!] + r.Replacement.Value))).ToList();
        return new UserPatch(UserPatch.CurrentFormat, name, description, new PatchTarget(buildId, objectName), replaced,
            [.. _code], _relocations);
    }

    private ElfImageSymbol? UniqueTargetFunction(string name) =>
        _targetSymbols.TryGetValue(name, out var list) && list.Count(s => s.Type == ElfImageSymbol.TypeFunction) == 1
            ? list.Single(s => s.Type == ElfImageSymbol.TypeFunction) : null;

    private void Include(ElfSection section)
    {
        if (_offsets.ContainsKey(section)) return;
        if (!section.Flags.HasFlag(ElfSectionFlags.Alloc))
            throw new UserBuildException($"the fix's code refers to {section.Name}, which is not loaded");
        if (section.Flags.HasFlag(ElfSectionFlags.Tls))
            throw Refuse("TLS", $"the fix defines thread-local data in {section.Name}",
            "new thread-local variables cannot be added to a running process: keep the state elsewhere");
        var alignment = Math.Max(1, (int)section.Alignment);
        if (alignment > 64)
            throw new UserBuildException($"{section.Name} needs {alignment}-byte alignment; at most 64 is supported");
        while (_code.Count % alignment != 0) _code.Add(0xcc);
        _offsets[section] = (ulong)_code.Count;
        _included.Add(section);
        _code.AddRange(section is ElfDataSection data ? data.Data : new byte[section.Size]);
    }

    private void LinkSection(ElfSection section)
    {
        foreach (var relocations in _unitOf[section].GetRelocationSections(section))
            foreach (var r in relocations.Relocations)
                LinkRelocation(section, r);
    }

    private abstract record Binding;
    private sealed record Internal(ElfSection Section, ulong Offset) : Binding;
    private sealed record InTarget(ulong Address) : Binding;
    private sealed record ThroughSlot(ulong Slot, ulong Address) : Binding;
    private sealed record Imported(string Name) : Binding;

    private void LinkRelocation(ElfSection section, ElfRelocation r)
    {
        var place = (uint)(_offsets[section] + r.Offset);
        var symbol = r.Symbol ?? throw new UserBuildException($"a relocation in {section.Name} has no symbol");
        var binding = Bind(symbol);
        switch (r.Type)
        {
            case X86RelocationType.PC32 or X86RelocationType.Plt32:
                var call = r.Type == X86RelocationType.Plt32 || IsFunction(symbol);
                switch (binding)
                {
                    case Internal i: Pc32(place, Offset(i) + (ulong)r.Addend); break;
                    case InTarget t:
                        Add(place, RelocationKind.Relative32, RelocationBase.Object, t.Address, null,
                        r.Addend); break;
                    case ThroughSlot s when call:
                        Pc32(place,
                        Thunk(RelocationBase.Object, s.Slot, null, symbol.Name) + (ulong)r.Addend); break;
                    case ThroughSlot { Address: not 0 } s:
                        Add(place, RelocationKind.Relative32, RelocationBase.Object,
                        s.Address, null, r.Addend); break;
                    case Imported m when call:
                        Pc32(place,
                        Thunk(RelocationBase.Import, 0, m.Name, m.Name) + (ulong)r.Addend); break;
                    default:
                        throw Refuse("copy-relocated data",
                        $"the fix reads {symbol.Name} directly, but the target does not define it",
                            "compile the fix with -fPIC so that imported data is reached through the GOT");
                }
                break;
            case X86RelocationType.GotPcRel or X86RelocationType.GotPcRelX or X86RelocationType.RexGotPcRelX:
                switch (binding)
                {
                    case ThroughSlot s:
                        Add(place, RelocationKind.Relative32, RelocationBase.Object, s.Slot, null,
                        r.Addend); break;
                    case InTarget t: Pc32(place, Slot(RelocationBase.Object, t.Address, null) + (ulong)r.Addend); break;
                    case Internal i: Pc32(place, Slot(RelocationBase.Patch, Offset(i), null) + (ulong)r.Addend); break;
                    case Imported m: Pc32(place, Slot(RelocationBase.Import, 0, m.Name) + (ulong)r.Addend); break;
                }
                break;
            case X86RelocationType.R64:
                switch (binding)
                {
                    case Internal i:
                        Add(place, RelocationKind.Absolute64, RelocationBase.Patch, Offset(i), null,
                        r.Addend); break;
                    case InTarget t:
                        Add(place, RelocationKind.Absolute64, RelocationBase.Object, t.Address, null,
                        r.Addend); break;
                    case ThroughSlot s when s.Address != 0:
                        Add(place, RelocationKind.Absolute64, RelocationBase.Object,
                        s.Address, null, r.Addend); break;
                    case ThroughSlot:
                        Add(place, RelocationKind.Absolute64, RelocationBase.Import, 0, symbol.Name,
                        r.Addend); break;
                    case Imported m:
                        Add(place, RelocationKind.Absolute64, RelocationBase.Import, 0, m.Name,
                        r.Addend); break;
                }
                break;
            case X86RelocationType.GotTpOff or X86RelocationType.TpOff32 or X86RelocationType.TlsGd
                or X86RelocationType.TlsLd
                or X86RelocationType.DtpOff32 or X86RelocationType.GotPC32TlsDesc or X86RelocationType.TlsDescCall:
                throw Refuse("TLS", $"the fix uses thread-local storage ({symbol.Name}, {r.Type})",
                "thread-local variables are not supported by user-space patches yet");
            default:
                throw new UserBuildException($"relocation {r.Type} in {section.Name} (to {symbol.Name}) is not " +
                $"supported in user-space patches");
        }
    }

    private static bool IsFunction(ElfSymbol symbol) =>
        symbol.Type is ElfSymbolType.Function or ElfSymbolType.GnuIndirectFunction;

    private ulong Offset(Internal i) => _offsets[i.Section] + i.Offset;

    /// <summary>How one symbol of the compiled fix binds; includes the patch sections it needs.</summary>
    private Binding Bind(ElfSymbol symbol)
    {
        if (symbol.IsUndefined)
        {
            var slot = _gotSlots.GetValueOrDefault(symbol.Name);
            var defined = UniqueTargetSymbol(symbol.Name, local: false);
            if (slot != 0) return new ThroughSlot(slot, defined?.Value ?? 0);
            if (defined is not null) return new InTarget(defined.Value);
            return new Imported(symbol.Name);
        }
        if (symbol.Section is null)
            throw new UserBuildException($"symbol {symbol.Name} is neither defined in a section nor undefined");
        // A section symbol stands for what the section defines (with -ffunction-sections -fdata-sections: one thing).
        var entity = symbol.Type == ElfSymbolType.Section ? NamedEntityOf(symbol.Section) : symbol;
        if (entity is not null && entity.Name.Length > 0 && !IsPartOfReplaced(entity.Name))
        {
            var original = UniqueTargetSymbol(entity.Name, local: true);
            if (original is not null && (original.Type == ElfImageSymbol.TypeFunction) == IsFunction(entity))
                return new InTarget(original.Value);
            if (entity.Type == ElfSymbolType.Object && symbol.Section.Flags.HasFlag(ElfSectionFlags.Write))
                throw Refuse("data layout",
                    $"the fix adds the writable variable {entity.Name}, which the target does not have",
                    "a patch cannot add state to a running process: keep the fix to existing variables");
            if (_targetSymbols.TryGetValue(entity.Name, out var several) && several.Count > 1)
                throw new UserBuildException($"{entity.Name} names {several.Count} different symbols in the target; " +
                    $"which one the fix means is ambiguous");
        }
        else if (entity is null && symbol.Section.Flags.HasFlag(ElfSectionFlags.Write) && symbol.Section.Size > 0)
            throw Refuse("data layout", $"the fix adds writable data in {symbol.Section.Name}",
                "a patch cannot add state to a running process");
        Include(symbol.Section);
        return new Internal(symbol.Section, symbol.Type == ElfSymbolType.Section ? 0 : symbol.Value);
    }

    private bool IsPartOfReplaced(string name) =>
        _replaced.Contains(name) || _replaced.Any(f => name.StartsWith(f + ".cold") || name.StartsWith(f + ".part."));

    private ElfSymbol? NamedEntityOf(ElfSection section)
    {
        var defined = _unitOf[section].SymbolTable?.Symbols.Where(s => ReferenceEquals(s.Section, section)
            && s.Type is ElfSymbolType.Function or ElfSymbolType.Object).ToList() ?? [];
        return defined.Count == 1 && defined[0].Value == 0 ? defined[0] : null;
    }

    private ElfImageSymbol? UniqueTargetSymbol(string name, bool local)
    {
        if (!_targetSymbols.TryGetValue(name, out var list)) return null;
        var candidates = list.Where(s => local || s.Binding != ElfImageSymbol.BindingLocal).ToList();
        return candidates.Count == 1 ? candidates[0] : null;
    }

    private void Pc32(uint place, ulong target) =>
        BinaryPrimitives.WriteInt32LittleEndian(CodeSpan(place, 4), checked((int)((long)target - place)));

    private Span<byte> CodeSpan(uint place, int length) =>
        System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_code).Slice((int)place, length);

    private void
        Add(uint place, RelocationKind kind, RelocationBase relativeTo, ulong value, string? symbol, long addend) =>
        _relocations.Add(new PatchRelocation(place, kind, relativeTo, value, symbol, addend));

    /// <summary>An 8-byte slot holding an address, in the patch: a GOT entry of the patch's own.</summary>
    private uint Slot(RelocationBase relativeTo, ulong value, string? symbol)
    {
        if (_slots.TryGetValue((relativeTo, value, symbol), out var existing)) return existing;
        while (_code.Count % 8 != 0) _code.Add(0xcc);
        var slot = (uint)_code.Count;
        _code.AddRange(new byte[8]);
        Add(slot, RelocationKind.Absolute64, relativeTo, value, symbol, 0);
        return _slots[(relativeTo, value, symbol)] = slot;
    }

    /// <summary>A 6-byte <c>jmp *slot(%rip)</c>, so calls reach a function at any distance.</summary>
    private uint Thunk(RelocationBase relativeTo, ulong slotOrZero, string? symbol, string key)
    {
        if (_thunks.TryGetValue(key, out var existing)) return existing;
        while (_code.Count % 8 != 0) _code.Add(0xcc);
        var thunk = (uint)_code.Count;
        _code.AddRange([0xff, 0x25, 0, 0, 0, 0]);
        if (relativeTo == RelocationBase.Object)
            // the target's GOT slot
            Add(thunk + 2, RelocationKind.Relative32, RelocationBase.Object, slotOrZero, null, -4);
        else
            Pc32(thunk + 2, Slot(RelocationBase.Import, 0, symbol) - 4);
        return _thunks[key] = thunk;
    }

    private static UserBuildException Refuse(string rule, string what, string advice) =>
        new($"{what} (rule: {rule}); {advice}");
}

/// <summary>A user-space patch could not be built.</summary>
public sealed class
    UserBuildException(string message, ExitCode exitCode = ExitCode.InputRefused, Exception? inner = null)
    : KintsugiException(message, inner)
{
    public UserBuildException(string message, Exception inner) : this(message, ExitCode.InputRefused, inner) { }

    public override ExitCode ExitCode { get; } = exitCode;

    /// <summary>The rule that refused the build, when the builder acts on it (<c>fidelity</c>: another compile command
    /// may make the shipped code).</summary>
    public string? Rule { get; init; }
}
