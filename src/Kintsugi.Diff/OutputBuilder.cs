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
    private readonly ObjectView _patched;
    private readonly DiffOptions _options;
    private readonly IReadOnlyDictionary<SymbolKey, FunctionChange> _changes;
    private readonly List<DiffRefusal> _refusals;
    private readonly ElfSymbolTableSection _table;
    private readonly Dictionary<ElfSection, ElfSection> _copiedSections = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<ElfSection, ElfSymbol> _sectionSymbols = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<DefinedSymbol, ElfSymbol> _symbols = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<string, (ElfSymbol Symbol, LoadTimeReference Reference,
        List<ReferenceSite> Sites)> _references = new(StringComparer.Ordinal);
    /// <summary>
    /// Where each reference's relocations sit in the output's sections, for the sites rewritten after the fact.
    /// </summary>
    private readonly Dictionary<string, List<(ElfSection Section, ulong Offset)>> _places = new(StringComparer.Ordinal);
    /// <summary>Relocations of [Start, End) of From to copy into To, at their offset less Base.</summary>
    private readonly Queue<(ElfSection From, ElfSection To, ulong Start, ulong End, ulong Base)> _pending = new();
    private readonly Dictionary<ElfSection, SortedSet<ulong>> _fragmentStarts = new(ReferenceEqualityComparer.Instance);
    private readonly HashSet<(ElfSection Section, ulong Start)> _includedFragments = [];
    private readonly HashSet<string> _refusedSymbols = new(StringComparer.Ordinal);
    private readonly BindingPolicy _policy;
    private readonly List<InertSite> _inertSites = [];

    public ElfObject Output { get; } = ElfObject.CreateRelocatable();

    public OutputBuilder(ObjectView patched, DiffOptions options,
        IReadOnlyDictionary<SymbolKey, FunctionChange> changes,
        List<DiffRefusal> refusals)
    {
        _patched = patched;
        _options = options;
        _changes = changes;
        _refusals = refusals;
        _policy = new BindingPolicy(options.Object, options.Exports);
        _table = Output.SymbolTable!;
        Output.Header.Type = patched.Elf.Header.Type;
    }

    public IReadOnlyList<LoadTimeReference> References =>
        [.. _references.Values.Select(r => r.Reference with { Sites = r.Sites })
            .OrderBy(r => r.OutputName, StringComparer.Ordinal)];

    public IReadOnlyList<InertSite> InertSites =>
        [.. _inertSites.DistinctBy(s => (s.Function, s.Key)).OrderBy(s => s.Function, StringComparer.Ordinal)
            .ThenBy(s => s.Key, StringComparer.Ordinal)];

    public void Include(DefinedSymbol function) => IncludeCode(function);

    /// <summary>Follows every reference of the included code, then adds the special-section entries.</summary>
    public void Complete()
    {
        Drain();
        BindStaticCallKeys();
        IncludeSpecialEntries();
        LoadRuntimeConstants();
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
        var changed = code.Role == SymbolRole.Function && _changes.GetValueOrDefault(code.Key)
            == FunctionChange.Changed;
        // A changed function's cold part follows its new name: objtool, run over the linked module on IBT kernels,
        // finds a cold part's parent by the name before ".cold" (gcc-14 splits functions gcc-12 kept whole).
        var coldOfChanged = code.Role == SymbolRole.ColdPart
            && _changes.GetValueOrDefault(code.ParentKey) == FunctionChange.Changed;
        var name = changed ? _options.SymbolTag + ObjectDiffer.Sanitize(code.Name)
            : coldOfChanged ? _options.SymbolTag + ObjectDiffer.Sanitize(code.Parent!)
                + code.Name[code.Parent!.Length..]
            : code.Name;
        var symbol = new ElfSymbol(name)
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

    /// <summary>
    /// A fresh copy of one data object in a section of its own (named like the original's, so the kernel treats it
    /// alike).
    /// </summary>
    private ElfSymbol IncludeData(DefinedSymbol data)
    {
        if (_symbols.TryGetValue(data, out var existing)) return existing;
        ElfSection section = data.Section is ElfDataSection bytes
            ? new ElfDataSection(data.Section.Name, data.Section.Type,
                ObjectView.Bytes(bytes, data.Start, data.Symbol.Size).ToArray())
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
        // A fragment section's bytes are copied whole (offsets into it stay valid), its relocations fragment by
        // fragment.
        if (!IsFragmentSection(source)) _pending.Enqueue((source, copy, 0, ulong.MaxValue, 0));
        return copy;
    }

    /// <summary>
    /// Only the fragments the included code uses are followed (<see cref="KernelNames.IsFragmentSection"/>); the
    /// others may jump into code the patch does not include (__init code among it) and are never run from the patch.
    /// </summary>
    private static bool IsFragmentSection(ElfSection section) => KernelNames.IsFragmentSection(section.Name);

    /// <summary>
    /// Includes the fragment of <paramref name="section"/> that starts at <paramref name="start"/>: up to the next
    /// place anything refers to.
    /// </summary>
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
        // Fragments are entered from code and from alternative entries; other tables (ORC, debug information) point
        // into their middle.
        foreach (var (from, relocations) in _patched.Relocations.Where(r
            => r.Key.Flags.HasFlag(ElfSectionFlags.ExecInstr) || r.Key.Name == ".altinstructions"))
            foreach (var relocation in relocations)
                if (ReferenceEquals(relocation.Symbol?.Section, section)
                    && _patched.Resolve(from, relocation) is { Defined: null, Section: { } target, Offset: >= 0 } place
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


    /// <summary>
    /// The module loader places sections inside page-aligned allocations: it cannot honour more than a page.
    /// </summary>
    internal const ulong MaxAlignment = 4096;

    private void Insert(ElfSection section)
    {
        // Checked here, before the writer pads the output to an alignment the input merely claims.
        if (section.Alignment > MaxAlignment)
            throw new DiffException($"{section.Name} in the patched object asks for {section.Alignment}-byte " +
                $"alignment; a livepatch module's sections can be aligned to at most {MaxAlignment} bytes. Align the " +
                "new code or data less strictly.");
        Output.Sections.Insert(Output.Sections.IndexOf(_table), section);
    }

    private ElfSymbol SectionSymbol(ElfSection section)
    {
        if (_sectionSymbols.TryGetValue(section, out var symbol)) return symbol;
        symbol = new ElfSymbol("")
        { Type = ElfSymbolType.Section, Binding = ElfSymbolBinding.Local, Section = section };
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
            AddRelocation(relocations, to, relocation.Offset - @base, relocation.Type, mapped.Value.Symbol,
                mapped.Value.Addend);
        }
    }

    private ElfRelocationSection RelocationSectionFor(ElfSection target)
    {
        var existing = Output.Sections.OfType<ElfRelocationSection>()
            .FirstOrDefault(r => ReferenceEquals(r.Target, target));
        if (existing is not null) return existing;
        var created = new ElfRelocationSection(target, _table);
        Insert(created);
        return created;
    }

    private void AddRelocation(ElfRelocationSection relocations, ElfSection target, ulong offset,
        X86RelocationType type, ElfSymbol symbol, long addend)
    {
        relocations.Relocations.Add(new ElfRelocation(offset, type, symbol, addend));
        if (symbol.IsUndefined && _references.TryGetValue(symbol.Name, out var reference))
        {
            reference.Sites.Add(new ReferenceSite(target.Name, offset, (uint)type, addend));
            _places[symbol.Name].Add((target, offset));
        }
    }

    /// <summary>
    /// The output symbol and addend a relocation of the patched object becomes, or null when it was refused.
    /// </summary>
    private (ElfSymbol Symbol, long Addend)? MapTarget(ElfSection from, ElfRelocation relocation)
    {
        var target = _patched.Resolve(from, relocation);
        var symbol = relocation.Symbol!;
        // The address the relocation names, as an offset from the symbol's section (or the symbol itself when
        // undefined).
        var address = relocation.Addend
            + (symbol.Type == ElfSymbolType.Section || symbol.Section is null ? 0 : (long)symbol.Value);
        if (target.IsExternal)
            return (Reference(symbol.Name, symbol.Name, isLocal: false, definedInUnit: false,
                symbol.Type switch
                {
                    ElfSymbolType.Function => ReferenceTargetKind.Function,
                    ElfSymbolType.Object => ReferenceTargetKind.Object,
                    _ => ReferenceTargetKind.Other,
                }), relocation.Addend);

        if (target.Defined is { } defined)
        {
            var addend = address - (long)defined.Start;
            switch (defined.Role)
            {
                case SymbolRole.Function or SymbolRole.ColdPart:
                    {
                        var change = _changes.GetValueOrDefault(defined.OwnerKey, FunctionChange.New);
                        if (change is FunctionChange.Changed or FunctionChange.New)
                        {
                            if (KernelNames.IsInitSection(defined.Section.Name))
                                return Refuse(RefusalRule.InitCodeChanged, defined.Name,
                                $"the patched code calls {defined.Name}, which is __init code: it is freed after " +
                                "boot. Call something that stays, or do the work from a callback.");
                            return (IncludeCode(defined), addend);
                        }
                        if (KernelNames.IsInitSection(defined.Section.Name))
                            return Refuse(RefusalRule.InitCodeChanged, defined.Name,
                            $"the patched code references {defined.Name}, which is __init code freed after boot; it " +
                            "cannot be called from a livepatch.");
                        return (ReferenceTo(defined, ReferenceTargetKind.Function), addend);
                    }
                case SymbolRole.Special:
                    return (IncludeData(defined), addend);
                default:
                    // New __initdata too: a copy in the livepatch's own .init.data is freed once the livepatch module
                    // has loaded.
                    if (KernelNames.IsInitSection(defined.Section.Name))
                        return Refuse(RefusalRule.InitCodeChanged, defined.Name,
                        $"the patched code references {defined.Name}, which is __initdata ({defined.Section.Name}) " +
                        "freed after boot or module load. Keep what the patched code needs in ordinary data (drop " +
                        "__initdata), or compute it where it is used.");
                    if (defined.Twin is { Role: SymbolRole.Data })
                        return (ReferenceTo(defined, ReferenceTargetKind.Object), addend);
                    return (IncludeData(defined), addend);
            }
        }

        // A place in a section without a symbol: literal strings, constant tables, alternative replacement code.
        var section = target.Section!;
        if (_copiedSections.ContainsKey(section) || ObjectView.IsStringSection(section)
            || section.Flags.HasFlag(ElfSectionFlags.ExecInstr)
            || (section.Flags.HasFlag(ElfSectionFlags.Alloc) && !section.Flags.HasFlag(ElfSectionFlags.Write)))
        {
            if (KernelNames.IsInitSection(section.Name)) return Refuse(RefusalRule.InitCodeChanged, section.Name,
                $"the patched code references {section.Name}, which is freed after boot.");
            var copy = CopySection(section);
            if (IsFragmentSection(section) && target.Offset >= 0) IncludeFragment(section, (ulong)target.Offset);
            return (SectionSymbol(copy), address);
        }
        return Refuse(RefusalRule.UnsupportedSection, section.Name,
            $"the patched code refers to writable data in {section.Name} that has no symbol, so it can neither be " +
            "copied safely nor bound to the running kernel. Give the data a name (a static or global variable) or " +
            "avoid the reference.");
    }

    private (ElfSymbol, long)? Refuse(RefusalRule rule, string symbol, string message)
    {
        if (_refusedSymbols.Add(rule + ":" + symbol)) _refusals.Add(new DiffRefusal(rule, symbol, message));
        return null;
    }

    /// <summary>
    /// A reference to something the original unit defines, under the original's name (the running kernel's).
    /// </summary>
    private ElfSymbol ReferenceTo(DefinedSymbol defined, ReferenceTargetKind kind)
    {
        var counterpart = defined.Twin;
        var name = counterpart?.Name ?? defined.Name;
        var isLocal = counterpart?.IsLocal ?? defined.IsLocal;
        return Reference(isLocal ? _options.SymbolTag + "local_" + ObjectDiffer.Sanitize(name) : name, name, isLocal,
            definedInUnit: counterpart is not null, kind);
    }

    private ElfSymbol Reference(string outputName, string targetName, bool isLocal, bool definedInUnit,
        ReferenceTargetKind kind)
    {
        if (_references.TryGetValue(outputName, out var existing)) return existing.Symbol;
        var symbol = new ElfSymbol(outputName)
        {
            Binding = ElfSymbolBinding.Global,
            Type = ElfSymbolType.NoType,
            SpecialSection = ElfSpecialSectionIndex.Undefined
        };
        _table.Symbols.Add(symbol);
        _references[outputName] = (symbol,
            new LoadTimeReference(outputName, targetName, isLocal, definedInUnit, kind, []), []);
        _places[outputName] = [];
        return symbol;
    }

    /// <summary>Keeps the entries of the kernel's special tables that belong to included code.</summary>
    private void IncludeSpecialEntries()
    {
        foreach (var section in _patched.Elf.Sections.ToList())
        {
            if (SpecialSections.Find(section.Name) is not { } table || section is not ElfDataSection data) continue;
            // Where objtool runs over the linked livepatch module, it writes these tables for all of its code,
            // generated code included, but only when no input has them: a unit's copy would leave the rest without
            // (6.12's "Unpatched return thunk in use" from the module's own exit function).
            if (_options.ObjtoolAtModuleLink && SpecialSections.WrittenByObjtool(table)) continue;
            var relocations = _patched.Relocations.GetValueOrDefault(section) ?? [];
            var entrySize = SpecialSections.EntrySize(table, section, relocations);
            if (entrySize is not { } size)
            {
                if (relocations.Any(r => TargetsIncludedCode(section, r)))
                    Refuse(RefusalRule.UnsupportedSection, section.Name,
                        $"{section.Name} has entries of a size this builder does not know for this kernel, and " +
                        "included code has entries in it; nothing would be safe to guess.");
                continue;
            }
            var count = SpecialSections.EntryCount(table, section, size)!.Value;
            var kept = new List<int>();
            var byEntry = relocations.GroupBy(r => (int)(r.Offset / (ulong)size))
                .ToDictionary(g => g.Key, g => g.ToList());
            for (var i = 0; i < count; i++)
                if (byEntry.TryGetValue(i, out var entry) && entry[0].Offset == (ulong)(i * size)
                    && TargetsIncludedCode(section, entry[0])
                    && KeepEntry(section, table, entry, (ulong)(i * size)))
                    kept.Add(i);
            if (kept.Count == 0) continue;

            var copy = new ElfDataSection(section.Name, section.Type,
                [.. kept.SelectMany(i => SpecialSections.Entry(data, i, size))])
            {
                Flags = section.Flags & ~ElfSectionFlags.Group,
                Alignment = section.Alignment,
                EntrySize = section.EntrySize,
            };
            // An ordered section stays ordered (the linker refuses to mix ordered and unordered input sections of one
            // name); gas links it to the first function of the unit, which may not be included, so it follows the first
            // kept entry's.
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
                    if (MapTarget(section, relocation) is not { } mapped) continue;
                    AddRelocation(output, copy, (ulong)(k * size + inEntry), relocation.Type, mapped.Symbol,
                        mapped.Addend);
                }
            }
            if (table.Companion is { } companionName
                && _patched.Elf.FindSection(companionName) is ElfDataSection companion)
            {
                var width = table.CompanionEntrySize;
                Insert(new ElfDataSection(companionName, companion.Type,
                    [.. kept.SelectMany(i => companion.Data.AsSpan(i * width, width).ToArray())])
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
        return section is not null && section.Flags.HasFlag(ElfSectionFlags.ExecInstr)
            && _copiedSections.ContainsKey(section)
            && (target.Defined is null || _symbols.ContainsKey(target.Defined) || target.Defined.Role
                == SymbolRole.ColdPart)
            && (!IsFragmentSection(section) || InIncludedFragment(section, target.Offset));
    }

    /// <summary>
    /// Calls through a static call trampoline (<c>__SCT__NAME</c>) in included code, decided by their key
    /// (<c>__SCK__NAME</c>) before the tables are filtered. A tracepoint's call whose key lives in a module becomes a
    /// no-op: its site is never reached once the tracepoint's branch is inert, and objtool, where it runs over the
    /// linked module, must not find a static call to set up through a key bound too late. Where objtool runs there,
    /// every other key is named as an undefined symbol, so that objtool records the key itself rather than the
    /// trampoline (which the kernel accepts only for exported static calls).
    /// </summary>
    private void BindStaticCallKeys()
    {
        foreach (var (outputName, reference) in _references.ToList())
        {
            if (KernelNames.StaticCallKeyOf(reference.Reference.TargetName) is not { } keyName) continue;
            var home = _patched.ByKey.GetValueOrDefault(SymbolKey.Named(keyName)) is { Role: SymbolRole.Data } key
                ? (key.Twin is not null ? SymbolHome.Unit : SymbolHome.Patch) : SymbolHome.Elsewhere;
            var binding = _policy.ForKey(keyName, home, KeyUse.StaticCall);
            _options.Trace?.Invoke(new DiffDecision(DiffStep.Bind, keyName,
                $"static call key: {binding.Kind.ToString().ToLowerInvariant()}, {binding.Reason}"));
            switch (binding.Kind)
            {
                case BindingKind.Inert:
                    foreach (var (section, offset) in _places[outputName].ToList())
                        if (DisableCall(section, offset, keyName, binding.Reason) is { } owner)
                            _inertSites.Add(new InertSite(owner, keyName, KeyUse.StaticCall, binding.Reason));
                    DropIfUnused(outputName);
                    break;
                case BindingKind.Refused:
                    Refuse(RefusalRule.SpecialSectionUnsupported, keyName, binding.Reason);
                    break;
                // objtool finds no key in the module and names the exported trampoline, as for the module itself.
                case BindingKind.Normal when binding.Case == BindingCase.VmlinuxStaticCallTrampoline:
                    break;
                default:
                    if (_options.ObjtoolAtModuleLink && !_references.ContainsKey(keyName) && home != SymbolHome.Patch)
                        Reference(keyName, keyName, isLocal: false, definedInUnit: home == SymbolHome.Unit,
                            ReferenceTargetKind.Object);
                    break;
            }
        }
    }

    /// <summary>
    /// Turns the call whose displacement is at <paramref name="offset"/> into a no-op; the function holding it, or null
    /// when refused.
    /// </summary>
    private string? DisableCall(ElfSection section, ulong offset, string key, string reason)
    {
        var source = _copiedSections.FirstOrDefault(c => ReferenceEquals(c.Value, section)).Key;
        var owner = source is null ? section.Name
            : _patched.Covering(source, (long)offset) is { } defined
                ? (defined.Role == SymbolRole.ColdPart ? defined.Parent! : defined.Name) : section.Name;
        if (section is not ElfDataSection code || offset < 1 || offset + 4 > (ulong)code.Data.Length
            || code.Data[offset - 1] != 0xe8)
        {
            Refuse(RefusalRule.SpecialSectionUnsupported, key, $"{owner}: {reason}, but its static call is not a " +
                "plain call (a tail call?); this builder cannot leave it disabled. Report it with the patch.");
            return null;
        }
        Nop5.CopyTo(code.Data.AsSpan((int)offset - 1));
        RemoveRelocations(section, offset - 1, offset + 4);
        return owner;
    }

    /// <summary>
    /// Removes the output's relocations in [start, end) of a section and the reference sites they were.
    /// </summary>
    private void RemoveRelocations(ElfSection section, ulong start, ulong end)
    {
        foreach (var relocations in Output.Sections.OfType<ElfRelocationSection>()
            .Where(r => ReferenceEquals(r.Target, section)))
            relocations.Relocations.RemoveAll(r => r.Offset >= start && r.Offset < end);
        foreach (var (name, places) in _places)
        {
            var sites = _references[name].Sites;
            for (var i = places.Count - 1; i >= 0; i--)
            {
                if (!ReferenceEquals(places[i].Section, section) || places[i].Offset < start || places[i].Offset >= end)
                    continue;
                places.RemoveAt(i);
                sites.RemoveAt(i);
            }
        }
    }

    /// <summary>
    /// A reference whose every site was rewritten away is no reference: its undefined symbol goes too.
    /// </summary>
    private void DropIfUnused(string outputName)
    {
        if (!_references.TryGetValue(outputName, out var reference) || reference.Sites.Count > 0) return;
        _table.Symbols.Remove(reference.Symbol);
        _references.Remove(outputName);
        _places.Remove(outputName);
    }

    /// <summary>
    /// Whether a static branch or static call entry of included code is kept, as the binding policy answers for its
    /// key: kept when the key is bound before the kernel sets the entry up; dropped, with the site left disabled and
    /// recorded, for a tracepoint of a module; refused otherwise. Other tables have no key and are always kept.
    /// </summary>
    private bool KeepEntry(ElfSection section, SpecialSections.Table table, List<ElfRelocation> entry, ulong entryStart)
    {
        if (table.KeyField < 0
            || entry.FirstOrDefault(r => r.Offset == entryStart
            + (ulong)table.KeyField) is not { } keyRelocation) return true;
        var use = table.Name == KernelNames.JumpTable ? KeyUse.StaticBranch : KeyUse.StaticCall;
        var key = _patched.Resolve(section, keyRelocation);
        var name = key.Defined?.Name ?? key.Symbol.Name;
        var home = key.Defined switch
        {
            null => SymbolHome.Elsewhere,
            { Role: SymbolRole.Special } => SymbolHome.Patch,
            { Twin: null } => SymbolHome.Patch,
            _ => SymbolHome.Unit,
        };
        var binding = _policy.ForKey(name, home, use, key.Defined?.IsLocal ?? false,
            key.Defined is { Role: SymbolRole.Special } special
                && KernelNames.IsDebugDescriptor(special.Name, special.Section.Name));
        _options.Trace?.Invoke(new DiffDecision(DiffStep.Bind, name,
            $"{table.Name} key: {binding.Kind.ToString().ToLowerInvariant()}, {binding.Reason}"));
        switch (binding.Kind)
        {
            case BindingKind.Normal or BindingKind.Livepatch:
                return true;
            case BindingKind.Inert:
                var site = _patched.Resolve(section, entry[0]);
                var owner = site.Defined is { Role: SymbolRole.ColdPart } cold ? cold.Parent! : site.Defined?.Name
                    ?? site.Section!.Name;
                // A static branch's site must be in its off state once nothing will ever switch it.
                if (use == KeyUse.StaticBranch && !DisableBranchSite(site, keyRelocation.Addend, owner, name))
                    return false;
                _inertSites.Add(new InertSite(owner, name, use, binding.Reason));
                return false;
            default:
                Refuse(RefusalRule.SpecialSectionUnsupported, name, binding.Reason);
                return false;
        }
    }

    /// <summary>
    /// Leaves a static branch site as the kernel would with its key off: a no-op where the branch bit (the low bit of
    /// the key field's addend) is clear. The compiler emits a jump that objtool turns into a no-op (JUMP_LABEL_HACK);
    /// in an object objtool has not processed yet it is still the jump, which would run the tracepoint unconditionally.
    /// </summary>
    private bool DisableBranchSite(RelocationTarget site, long keyAddend, string owner, string key)
    {
        var section = site.Defined?.Section ?? site.Section;
        var offset = (long)(site.Defined?.Start ?? 0) + site.Offset;
        if (section is null || !_copiedSections.TryGetValue(section, out var copy) || copy is not ElfDataSection code
            || offset < 0
            || offset + 5 > code.Data.Length || (keyAddend & 1) != 0)
        {
            Refuse(RefusalRule.SpecialSectionUnsupported, key, $"{owner} uses {key} in a static branch this builder " +
                "cannot leave disabled (its key lives in the module, and the site is not a plain no-op or jump). " +
                "Report it with the patch.");
            return false;
        }
        var bytes = code.Data.AsSpan((int)offset);
        int length;
        if (bytes[0] == 0xe9) length = 5;
        else if (bytes[0] == 0xeb) length = 2;
        else if (bytes[..5].SequenceEqual(Nop5) || bytes[..2].SequenceEqual(Nop2)) return true;
        else
        {
            Refuse(RefusalRule.SpecialSectionUnsupported, key, $"{owner}: the static branch on {key} is neither a " +
                $"no-op nor a jump (0x{bytes[0]:x2} at {section.Name}+0x{offset:x}); it cannot be left disabled " +
                "safely.");
            return false;
        }
        (length == 5 ? Nop5 : Nop2).CopyTo(bytes);
        // A jump into another section (a cold part) carried a relocation in its displacement: it goes with the jump.
        RemoveRelocations(copy, (ulong)offset, (ulong)(offset + length));
        return true;
    }

    private static readonly byte[] Nop5 = [0x0f, 0x1f, 0x44, 0x00, 0x00];
    private static readonly byte[] Nop2 = [0x66, 0x90];

    /// <summary>
    /// Linux 6.11 and later build some boot-time constants into vmlinux code as immediates the kernel patches once at
    /// boot (runtime_const_ptr: <c>USER_PTR_MAX</c> in every inlined access_ok, <c>dentry_hashtable</c>), listed in
    /// <c>runtime_ptr_SYM</c>. Nothing patches a module's copies, whose placeholder would stay. Each included
    /// <c>movabs $imm64, %reg</c> (10 bytes) becomes <c>mov SYM(%rip), %reg</c> (7 bytes) and a 3-byte no-op: the same
    /// value, read from the variable the kernel set it from, bound like any other reference. A shift by a runtime
    /// constant (<c>runtime_shift_SYM</c>) has no such in-place form and is refused.
    /// </summary>
    private void LoadRuntimeConstants()
    {
        foreach (var section in _patched.Elf.Sections)
        {
            var pointer = section.Name.StartsWith(KernelNames.RuntimePointerPrefix, StringComparison.Ordinal);
            if (!pointer && !section.Name.StartsWith(KernelNames.RuntimeShiftPrefix, StringComparison.Ordinal))
                continue;
            var name =
                section.Name[(pointer ? KernelNames.RuntimePointerPrefix : KernelNames.RuntimeShiftPrefix).Length..];
            foreach (var relocation in _patched.Relocations.GetValueOrDefault(section) ?? [])
            {
                if (!TargetsIncludedCode(section, relocation)) continue;
                var site = _patched.Resolve(section, relocation);
                var owner = site.Defined is { Role: SymbolRole.ColdPart } cold ? cold.Parent! : site.Defined?.Name
                    ?? site.Section!.Name;
                if (!pointer)
                {
                    Refuse(RefusalRule.SpecialSectionUnsupported, name, $"{owner} shifts by the runtime constant " +
                        $"{name}, which the kernel patches into vmlinux's code at boot and never into a module's; a " +
                        "livepatch's copy would shift by a placeholder. Leave the code that hashes with it (d_hash " +
                        "in fs/dcache.c) unchanged, or compute the shift from the variable.");
                    continue;
                }
                var code = (ElfDataSection)_copiedSections[site.Defined?.Section ?? site.Section!];
                var immediate = (long)(site.Defined?.Start ?? 0) + site.Offset;
                if (!RewriteAsLoad(code, immediate, Target(name)))
                    Refuse(RefusalRule.SpecialSectionUnsupported, name, $"{owner} loads the runtime constant {name}, " +
                        "which the kernel patches into vmlinux's code at boot, but not with a movabs of the " +
                        $"placeholder (at {code.Name}+0x{immediate - 2:x}); this builder cannot make a livepatch's " +
                        "copy read it. Report it with the patch.");
            }
        }
    }

    /// <summary>
    /// The variable a runtime constant is set from: the unit's own (a static, bound with its sympos) or the kernel's.
    /// </summary>
    private ElfSymbol Target(string name) =>
        _patched.ByKey.GetValueOrDefault(SymbolKey.Named(name)) is { Role: SymbolRole.Data } defined
            ? ReferenceTo(defined, ReferenceTargetKind.Object)
            : Reference(name, name, isLocal: false, definedInUnit: false, ReferenceTargetKind.Object);

    private const ulong RuntimeConstantPlaceholder = 0x0123456789abcdef;

    /// <summary>
    /// Rewrites <c>movabs $placeholder, %reg</c> whose immediate is at <paramref name="immediate"/> into a RIP-relative
    /// load of <paramref name="variable"/>.
    /// </summary>
    private bool RewriteAsLoad(ElfDataSection code, long immediate, ElfSymbol variable)
    {
        var start = immediate - 2;
        if (start < 0 || immediate + 8 > code.Data.Length) return false;
        var bytes = code.Data.AsSpan((int)start, 10);
        // REX.W (with REX.B for r8 to r15), then B8+r and the 8-byte immediate.
        if ((bytes[0] & 0xfe) != 0x48 || bytes[1] is < 0xb8 or > 0xbf
            || System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes[2..])
                != RuntimeConstantPlaceholder) return false;
        var register = (bytes[1] - 0xb8) | ((bytes[0] & 1) << 3);
        // REX.W (with REX.R for r8 to r15), 8B /r with ModRM mod 00, r/m 101 (RIP-relative), a 32-bit displacement,
        // then nopl (%rax).
        byte[] load = [(byte)(0x48 | ((register >> 3) << 2)), 0x8b, (byte)(0x05 | ((register & 7) << 3)), 0, 0, 0, 0,
            0x0f, 0x1f, 0x00];
        load.CopyTo(bytes);
        RemoveRelocations(code, (ulong)start, (ulong)start + 10);
        AddRelocation(RelocationSectionFor(code), code, (ulong)start + 3, X86RelocationType.PC32, variable, -4);
        return true;
    }

    /// <summary>
    /// Sections the engine does not know that point at included code would be silently lost: refuse them by name.
    /// </summary>
    private void RefuseUnknownReferrers()
    {
        foreach (var (section, relocations) in _patched.Relocations)
        {
            if (SpecialSections.IsIgnored(section) || SpecialSections.Find(section.Name) is not null
                || section.Flags.HasFlag(ElfSectionFlags.ExecInstr)
                || section.Name.StartsWith(KernelNames.RuntimePointerPrefix, StringComparison.Ordinal)
                || section.Name.StartsWith(KernelNames.RuntimeShiftPrefix, StringComparison.Ordinal)
                || _copiedSections.ContainsKey(section) || ObjectView.IsDataSection(section) is false) continue;
            foreach (var relocation in relocations)
            {
                if (!TargetsIncludedCode(section, relocation)) continue;
                // A function pointer in a variable is ordinary data: calls through it reach the patched function
                // through ftrace.
                if (_patched.Covering(section, (long)relocation.Offset) is
                    {
                        Role: SymbolRole.Data
                    or SymbolRole.Special
                    }) continue;
                Refuse(RefusalRule.UnsupportedSection, section.Name,
                    $"{section.Name} refers to patched code, and this builder does not know what the kernel does " +
                    "with that section; it will not drop it silently. Report it with the patch.");
                break;
            }
        }
    }
}
