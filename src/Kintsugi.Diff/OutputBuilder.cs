using Kintsugi.Elf;

namespace Kintsugi.Diff;

/// <summary>
/// Builds the differ's output object: copies of the included functions (changed ones under their output
/// names), the new functions and data they reach, fresh copies of per-use statics, the special-section
/// entries of the included code, and an undefined symbol for everything else they reference, recorded as
/// a <see cref="LoadTimeReference"/>.
/// </summary>
internal sealed class OutputBuilder
{
    private readonly ObjectView _original;
    private readonly ObjectView _patched;
    private readonly DiffOptions _options;
    private readonly IReadOnlyDictionary<string, FunctionChange> _changes;
    private readonly List<DiffRefusal> _refusals;
    private readonly ElfSymbolTableSection _table;
    private readonly Dictionary<ElfSection, ElfSection> _copiedSections = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<ElfSection, ElfSymbol> _sectionSymbols = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<DefinedSymbol, ElfSymbol> _symbols = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<string, (ElfSymbol Symbol, LoadTimeReference Reference, List<ReferenceSite> Sites)> _references = new(StringComparer.Ordinal);
    /// <summary>Relocations of [Start, End) of From to copy into To, at their offset less Base.</summary>
    private readonly Queue<(ElfSection From, ElfSection To, ulong Start, ulong End, ulong Base)> _pending = new();
    private readonly Dictionary<ElfSection, SortedSet<ulong>> _fragmentStarts = new(ReferenceEqualityComparer.Instance);
    private readonly HashSet<(ElfSection Section, ulong Start)> _includedFragments = [];
    private readonly HashSet<string> _refusedSymbols = new(StringComparer.Ordinal);

    public ElfObject Output { get; } = ElfObject.CreateRelocatable();

    public OutputBuilder(ObjectView original, ObjectView patched, DiffOptions options, IReadOnlyDictionary<string, FunctionChange> changes, List<DiffRefusal> refusals)
    {
        _original = original;
        _patched = patched;
        _options = options;
        _changes = changes;
        _refusals = refusals;
        _table = Output.SymbolTable!;
        Output.Header.Type = patched.Elf.Header.Type;
    }

    public IReadOnlyList<LoadTimeReference> References =>
        [.. _references.Values.Select(r => r.Reference with { Sites = r.Sites }).OrderBy(r => r.OutputName, StringComparer.Ordinal)];

    public void Include(DefinedSymbol function) => IncludeCode(function);

    /// <summary>Follows every reference of the included code, then adds the special-section entries.</summary>
    public void Complete()
    {
        Drain();
        IncludeSpecialEntries();
        Drain();
        RefuseUnknownReferrers();
    }

    private void Drain()
    {
        while (_pending.TryDequeue(out var work)) CopyRelocations(work.From, work.To, work.Start, work.End, work.Base);
    }

    private ElfSymbol IncludeCode(DefinedSymbol code)
    {
        if (_symbols.TryGetValue(code, out var existing)) return existing;
        var section = CopySection(code.Section);
        var changed = code.Role == SymbolRole.Function && _changes.GetValueOrDefault(code.Key) == FunctionChange.Changed;
        var symbol = new ElfSymbol(changed ? _options.SymbolTag + ObjectDiffer.Sanitize(code.Name) : code.Name)
        {
            Type = ElfSymbolType.Function,
            Binding = changed ? ElfSymbolBinding.Global : code.Symbol.Binding,
            Section = section,
            Value = code.Start,
            Size = code.Symbol.Size,
        };
        _table.Symbols.Add(symbol);
        _symbols[code] = symbol;
        _options.Trace?.Invoke(new DiffDecision(DiffStep.Include, code.Name,
            changed ? $"changed function, copied as {symbol.Name}" : "new code the included code uses, copied"));
        return symbol;
    }

    /// <summary>A fresh copy of one data object in a section of its own (named like the original's, so the kernel treats it alike).</summary>
    private ElfSymbol IncludeData(DefinedSymbol data)
    {
        if (_symbols.TryGetValue(data, out var existing)) return existing;
        ElfSection section = data.Section is ElfDataSection bytes
            ? new ElfDataSection(data.Section.Name, data.Section.Type, ObjectView.Bytes(bytes, data.Start, data.Symbol.Size).ToArray())
            : new ElfNoBitsSection(data.Section.Name, data.Symbol.Size);
        section.Flags = data.Section.Flags & ~ElfSectionFlags.Group & ~ElfSectionFlags.LinkOrder;
        section.Alignment = Math.Max(1, data.Section.Alignment);
        Insert(section);
        var symbol = new ElfSymbol(data.Name)
        {
            Type = data.Symbol.Type == ElfSymbolType.NoType ? ElfSymbolType.Object : data.Symbol.Type,
            Binding = data.Role == SymbolRole.Special ? ElfSymbolBinding.Local : data.Symbol.Binding,
            Section = section,
            Value = 0,
            Size = data.Symbol.Size,
        };
        _table.Symbols.Add(symbol);
        _symbols[data] = symbol;
        _options.Trace?.Invoke(new DiffDecision(DiffStep.Include, data.Name, data.Role == SymbolRole.Special
            ? "per-use static (warning state, debug descriptor, key), a fresh copy for the new code"
            : "new data the included code uses, copied"));
        _pending.Enqueue((data.Section, section, data.Start, data.End, data.Start));
        return symbol;
    }

    private ElfSection CopySection(ElfSection source)
    {
        if (_copiedSections.TryGetValue(source, out var copy)) return copy;
        copy = source is ElfDataSection data
            ? new ElfDataSection(source.Name, source.Type, (byte[])data.Data.Clone())
            : new ElfNoBitsSection(source.Name, source.Size);
        copy.Flags = source.Flags & ~ElfSectionFlags.Group & ~ElfSectionFlags.LinkOrder;
        copy.Alignment = source.Alignment;
        copy.EntrySize = source.EntrySize;
        Insert(copy);
        _copiedSections[source] = copy;
        // A fragment section's bytes are copied whole (offsets into it stay valid), its relocations fragment by fragment.
        if (!IsFragmentSection(source)) _pending.Enqueue((source, copy, 0, ulong.MaxValue, 0));
        return copy;
    }

    /// <summary>
    /// Sections of code fragments that each belong to one place elsewhere: alternative replacements and the
    /// feature tests of static_cpu_has. Only the fragments the included code uses are followed; the others may
    /// jump into code the patch does not include (__init code among it) and are never run from the patch.
    /// </summary>
    private static bool IsFragmentSection(ElfSection section) => section.Name is ".altinstr_replacement" or ".altinstr_aux";

    /// <summary>Includes the fragment of <paramref name="section"/> that starts at <paramref name="start"/>: up to the next place anything refers to.</summary>
    private void IncludeFragment(ElfSection section, ulong start)
    {
        if (!_includedFragments.Add((section, start))) return;
        var next = FragmentStarts(section).GetViewBetween(start + 1, ulong.MaxValue);
        _pending.Enqueue((section, _copiedSections[section], start, next.Count > 0 ? next.Min : ulong.MaxValue, 0));
    }

    private SortedSet<ulong> FragmentStarts(ElfSection section)
    {
        if (_fragmentStarts.TryGetValue(section, out var starts)) return starts;
        starts = [];
        // Fragments are entered from code and from alternative entries; other tables (ORC, debug information) point into their middle.
        foreach (var (from, relocations) in _patched.Relocations.Where(r => r.Key.Flags.HasFlag(ElfSectionFlags.ExecInstr) || r.Key.Name == ".altinstructions"))
            foreach (var relocation in relocations)
                if (ReferenceEquals(relocation.Symbol?.Section, section) && _patched.Resolve(from, relocation) is { Defined: null, Section: { } target, Offset: >= 0 } place
                    && ReferenceEquals(target, section))
                    starts.Add((ulong)place.Offset);
        return _fragmentStarts[section] = starts;
    }

    /// <summary>Whether an included fragment covers <paramref name="offset"/> of a fragment section.</summary>
    private bool InIncludedFragment(ElfSection section, long offset)
    {
        var starts = FragmentStarts(section).GetViewBetween(0, offset < 0 ? 0 : (ulong)offset);
        return starts.Count > 0 && _includedFragments.Contains((section, starts.Max));
    }


    /// <summary>The module loader places sections inside page-aligned allocations: it cannot honour more than a page.</summary>
    internal const ulong MaxAlignment = 4096;

    private void Insert(ElfSection section)
    {
        // Checked here, before the writer pads the output to an alignment the input merely claims.
        if (section.Alignment > MaxAlignment)
            throw new DiffException($"{section.Name} in the patched object asks for {section.Alignment}-byte alignment; a livepatch module's sections " +
                $"can be aligned to at most {MaxAlignment} bytes. Align the new code or data less strictly.");
        Output.Sections.Insert(Output.Sections.IndexOf(_table), section);
    }

    private ElfSymbol SectionSymbol(ElfSection section)
    {
        if (_sectionSymbols.TryGetValue(section, out var symbol)) return symbol;
        symbol = new ElfSymbol("") { Type = ElfSymbolType.Section, Binding = ElfSymbolBinding.Local, Section = section };
        _table.Symbols.Add(symbol);
        return _sectionSymbols[section] = symbol;
    }

    private void CopyRelocations(ElfSection from, ElfSection to, ulong start, ulong end, ulong @base)
    {
        ElfRelocationSection? relocations = null;
        foreach (var relocation in _patched.RelocationsIn(from, start, end))
        {
            var mapped = MapTarget(from, relocation);
            if (mapped is null) continue;
            relocations ??= RelocationSectionFor(to);
            AddRelocation(relocations, to, relocation.Offset - @base, relocation.Type, mapped.Value.Symbol, mapped.Value.Addend);
        }
    }

    private ElfRelocationSection RelocationSectionFor(ElfSection target)
    {
        var existing = Output.Sections.OfType<ElfRelocationSection>().FirstOrDefault(r => ReferenceEquals(r.Target, target));
        if (existing is not null) return existing;
        var created = new ElfRelocationSection(target, _table);
        Insert(created);
        return created;
    }

    private void AddRelocation(ElfRelocationSection relocations, ElfSection target, ulong offset, X86RelocationType type, ElfSymbol symbol, long addend)
    {
        relocations.Relocations.Add(new ElfRelocation(offset, type, symbol, addend));
        if (symbol.IsUndefined && _references.TryGetValue(symbol.Name, out var reference))
            reference.Sites.Add(new ReferenceSite(target.Name, offset, (uint)type, addend));
    }

    /// <summary>The output symbol and addend a relocation of the patched object becomes, or null when it was refused.</summary>
    private (ElfSymbol Symbol, long Addend)? MapTarget(ElfSection from, ElfRelocation relocation)
    {
        var target = _patched.Resolve(from, relocation);
        var symbol = relocation.Symbol!;
        // The address the relocation names, as an offset from the symbol's section (or the symbol itself when undefined).
        var address = relocation.Addend + (symbol.Type == ElfSymbolType.Section || symbol.Section is null ? 0 : (long)symbol.Value);
        if (target.IsExternal)
            return (Reference(symbol.Name, symbol.Name, isLocal: false, definedInUnit: false,
                symbol.Type switch { ElfSymbolType.Function => ReferenceTargetKind.Function, ElfSymbolType.Object => ReferenceTargetKind.Object, _ => ReferenceTargetKind.Other }), relocation.Addend);

        if (target.Defined is { } defined)
        {
            var addend = address - (long)defined.Start;
            switch (defined.Role)
            {
                case SymbolRole.Function or SymbolRole.ColdPart:
                {
                    var owner = defined.Role == SymbolRole.ColdPart ? defined.Parent! : defined.Key;
                    var change = _changes.GetValueOrDefault(owner, FunctionChange.New);
                    if (change is FunctionChange.Changed or FunctionChange.New)
                    {
                        if (ObjectView.IsInitSection(defined.Section)) return Refuse(RefusalRule.InitCodeChanged, defined.Name,
                            $"the patched code calls {defined.Name}, which is __init code: it is freed after boot. Call something that stays, or do the work from a callback.");
                        return (IncludeCode(defined), addend);
                    }
                    if (ObjectView.IsInitSection(defined.Section)) return Refuse(RefusalRule.InitCodeChanged, defined.Name,
                        $"the patched code references {defined.Name}, which is __init code freed after boot; it cannot be called from a livepatch.");
                    return (ReferenceTo(defined, ReferenceTargetKind.Function), addend);
                }
                case SymbolRole.Special:
                    return (IncludeData(defined), addend);
                default:
                    // New __initdata too: a copy in the livepatch's own .init.data is freed once the livepatch module has loaded.
                    if (ObjectView.IsInitSection(defined.Section)) return Refuse(RefusalRule.InitCodeChanged, defined.Name,
                        $"the patched code references {defined.Name}, which is __initdata ({defined.Section.Name}) freed after boot or module load. " +
                        "Keep what the patched code needs in ordinary data (drop __initdata), or compute it where it is used.");
                    if (_original.ByKey.GetValueOrDefault(defined.Key) is { Role: SymbolRole.Data })
                        return (ReferenceTo(defined, ReferenceTargetKind.Object), addend);
                    return (IncludeData(defined), addend);
            }
        }

        // A place in a section without a symbol: literal strings, constant tables, alternative replacement code.
        var section = target.Section!;
        if (_copiedSections.ContainsKey(section) || ObjectView.IsStringSection(section) || section.Flags.HasFlag(ElfSectionFlags.ExecInstr)
            || (section.Flags.HasFlag(ElfSectionFlags.Alloc) && !section.Flags.HasFlag(ElfSectionFlags.Write)))
        {
            if (ObjectView.IsInitSection(section)) return Refuse(RefusalRule.InitCodeChanged, section.Name,
                $"the patched code references {section.Name}, which is freed after boot.");
            var copy = CopySection(section);
            if (IsFragmentSection(section) && target.Offset >= 0) IncludeFragment(section, (ulong)target.Offset);
            return (SectionSymbol(copy), address);
        }
        return Refuse(RefusalRule.UnsupportedSection, section.Name,
            $"the patched code refers to writable data in {section.Name} that has no symbol, so it can neither be copied safely nor bound to the running kernel. " +
            "Give the data a name (a static or global variable) or avoid the reference.");
    }

    private (ElfSymbol, long)? Refuse(RefusalRule rule, string symbol, string message)
    {
        if (_refusedSymbols.Add(rule + ":" + symbol)) _refusals.Add(new DiffRefusal(rule, symbol, message));
        return null;
    }

    /// <summary>A reference to something the original unit defines, under the original's name (the running kernel's).</summary>
    private ElfSymbol ReferenceTo(DefinedSymbol defined, ReferenceTargetKind kind)
    {
        var counterpart = _original.ByKey.GetValueOrDefault(defined.Key);
        var name = counterpart?.Name ?? defined.Name;
        var isLocal = counterpart?.IsLocal ?? defined.IsLocal;
        return Reference(isLocal ? _options.SymbolTag + "local_" + ObjectDiffer.Sanitize(name) : name, name, isLocal, definedInUnit: counterpart is not null, kind);
    }

    private ElfSymbol Reference(string outputName, string targetName, bool isLocal, bool definedInUnit, ReferenceTargetKind kind)
    {
        if (_references.TryGetValue(outputName, out var existing)) return existing.Symbol;
        var symbol = new ElfSymbol(outputName) { Binding = ElfSymbolBinding.Global, Type = ElfSymbolType.NoType, SpecialSection = ElfSpecialSectionIndex.Undefined };
        _table.Symbols.Add(symbol);
        _references[outputName] = (symbol, new LoadTimeReference(outputName, targetName, isLocal, definedInUnit, kind, []), []);
        return symbol;
    }

    /// <summary>Keeps the entries of the kernel's special tables that belong to included code.</summary>
    private void IncludeSpecialEntries()
    {
        foreach (var section in _patched.Elf.Sections.ToList())
        {
            if (SpecialSections.Find(section.Name) is not { } table || section is not ElfDataSection data) continue;
            var relocations = _patched.Relocations.GetValueOrDefault(section) ?? [];
            var entrySize = SpecialSections.EntrySize(table, section, relocations);
            if (entrySize is not { } size)
            {
                if (relocations.Any(r => TargetsIncludedCode(section, r)))
                    Refuse(RefusalRule.UnsupportedSection, section.Name,
                        $"{section.Name} has entries of a size this builder does not know for this kernel, and included code has entries in it; nothing would be safe to guess.");
                continue;
            }
            var count = (int)(section.Size / (ulong)size);
            var kept = new List<int>();
            var byEntry = relocations.GroupBy(r => (int)(r.Offset / (ulong)size)).ToDictionary(g => g.Key, g => g.ToList());
            for (var i = 0; i < count; i++)
                if (byEntry.TryGetValue(i, out var entry) && entry[0].Offset == (ulong)(i * size) && TargetsIncludedCode(section, entry[0]))
                    kept.Add(i);
            if (kept.Count == 0) continue;

            var copy = new ElfDataSection(section.Name, section.Type, [.. kept.SelectMany(i => data.Data.AsSpan(i * size, size).ToArray())])
            {
                Flags = section.Flags & ~ElfSectionFlags.Group,
                Alignment = section.Alignment,
                EntrySize = section.EntrySize,
            };
            // An ordered section stays ordered (the linker refuses to mix ordered and unordered input sections of one
            // name); gas links it to the first function of the unit, which may not be included, so it follows the first kept entry's.
            if (section.Flags.HasFlag(ElfSectionFlags.LinkOrder))
            {
                var anchor = _patched.Resolve(section, byEntry[kept[0]][0]);
                copy.Link = _copiedSections[anchor.Defined?.Section ?? anchor.Section!];
            }
            Insert(copy);
            var output = RelocationSectionFor(copy);
            for (var k = 0; k < kept.Count; k++)
            {
                foreach (var relocation in byEntry[kept[k]])
                {
                    var inEntry = (int)(relocation.Offset - (ulong)(kept[k] * size));
                    if (inEntry == table.KeyField && !KeyAllowed(section, relocation)) continue;
                    if (MapTarget(section, relocation) is not { } mapped) continue;
                    AddRelocation(output, copy, (ulong)(k * size + inEntry), relocation.Type, mapped.Symbol, mapped.Addend);
                }
            }
            if (table.Companion is { } companionName && _patched.Elf.FindSection(companionName) is ElfDataSection companion)
            {
                var width = table.CompanionEntrySize;
                Insert(new ElfDataSection(companionName, companion.Type, [.. kept.SelectMany(i => companion.Data.AsSpan(i * width, width).ToArray())])
                {
                    Flags = companion.Flags & ~ElfSectionFlags.Group,
                    Alignment = companion.Alignment,
                    EntrySize = companion.EntrySize,
                });
            }
        }
    }

    private bool TargetsIncludedCode(ElfSection from, ElfRelocation relocation)
    {
        var target = _patched.Resolve(from, relocation);
        var section = target.Defined?.Section ?? target.Section;
        return section is not null && section.Flags.HasFlag(ElfSectionFlags.ExecInstr) && _copiedSections.ContainsKey(section)
            && (target.Defined is null || _symbols.ContainsKey(target.Defined) || target.Defined.Role == SymbolRole.ColdPart)
            && (!IsFragmentSection(section) || InIncludedFragment(section, target.Offset));
    }

    /// <summary>
    /// Static keys and static calls of vmlinux can be used from a livepatch (its vmlinux relocations are
    /// applied while the module loads); those of a module cannot, since the module may not be loaded. In a
    /// module unit, a key the unit does not define is usable only when the module loader links it (an export
    /// of vmlinux or of another module): any other is the patched module's own, bound by a livepatch
    /// relocation that is applied only when that module loads, after the key was needed.
    /// </summary>
    private bool KeyAllowed(ElfSection table, ElfRelocation relocation)
    {
        if (_options.Object.IsVmlinux) return true;
        var target = _patched.Resolve(table, relocation);
        // A key the fix adds is defined in the livepatch itself, which the kernel sets up with the livepatch's own jump entries.
        if (target.Defined is { Role: SymbolRole.Data } key && !_original.ByKey.ContainsKey(key.Key)) return true;
        var name = target.Defined?.Name ?? target.Symbol.Name;
        if (target.IsExternal && _options.LinkedByModuleLoader.Contains(name)) return true;
        Refuse(RefusalRule.SpecialSectionUnsupported, name,
            $"the patched code uses the {(table.Name == "__jump_table" ? "static key" : "static call")} {name} of module {_options.Object}, which a livepatch cannot use " +
            "(the module may load after the patch). Test the key with static_key_enabled() instead of a static branch, or call the function directly.");
        return false;
    }

    /// <summary>Sections the engine does not know that point at included code would be silently lost: refuse them by name.</summary>
    private void RefuseUnknownReferrers()
    {
        foreach (var (section, relocations) in _patched.Relocations)
        {
            if (SpecialSections.IsIgnored(section) || SpecialSections.Find(section.Name) is not null || section.Flags.HasFlag(ElfSectionFlags.ExecInstr)
                || _copiedSections.ContainsKey(section) || ObjectView.IsDataSection(section) is false) continue;
            foreach (var relocation in relocations)
            {
                if (!TargetsIncludedCode(section, relocation)) continue;
                // A function pointer in a variable is ordinary data: calls through it reach the patched function through ftrace.
                if (_patched.Covering(section, (long)relocation.Offset) is { Role: SymbolRole.Data or SymbolRole.Special }) continue;
                Refuse(RefusalRule.UnsupportedSection, section.Name,
                    $"{section.Name} refers to patched code, and this builder does not know what the kernel does with that section; it will not drop it silently. Report it with the patch.");
                break;
            }
        }
    }
}
