using Kintsugi.Elf;

namespace Kintsugi.Diff;

/// <summary>
/// The kernel's tables of fixed-size entries that point into code. Each entry belongs to the function its
/// first field points at; the output keeps exactly the entries of the functions it includes. Entry sizes
/// differ between kernel versions (for example <c>.altinstructions</c>: 12 bytes in 6.1, 14 in 6.12), so
/// each table lists the sizes it may have and the one whose relocation layout repeats is used.
/// </summary>
internal static class SpecialSections
{
    /// <param name="KeyField">The entry offset of a field naming a static key or static call, or -1.</param>
    /// <param name="ShortLastEntry">The bytes of data in an entry whose padding comes from the next entry's alignment
    /// (so the table's last entry has only these), or 0 when every entry is padded to its full size.</param>
    internal sealed record Table(string Name, int[] EntrySizes, int KeyField = -1, string? Companion = null,
        int CompanionEntrySize = 0,
        int ShortLastEntry = 0);

    public static readonly IReadOnlyList<Table> Tables =
    [
        new(KernelNames.JumpTable, [KernelNames.JumpEntrySize], KeyField: 8),
        new("__bug_table", [12, 16]),
        new("__ex_table", [12]),
        new(".altinstructions", [12, 14, 13]),
        // 5.10 aligns each entry before it and not after it (6.1 does both): 12 bytes of data on a 16-byte stride.
        new(".parainstructions", [16], ShortLastEntry: 12),
        new(".smp_locks", [4]),
        new(KernelNames.StaticCallSites, [8], KeyField: 4),
        new(".return_sites", [4]),
        new(".retpoline_sites", [4]),
        new(".call_sites", [4]),
        new(".ibt_endbr_seal", [4]),
        new(".cfi_sites", [4]),
        new("__mcount_loc", [8]),
        new("__patchable_function_entries", [8]),
        new(".orc_unwind_ip", [4], Companion: ".orc_unwind", CompanionEntrySize: 6),
    ];

    /// <summary>Sections whose references to functions never need to follow them into a livepatch.</summary>
    public static bool IsIgnored(ElfSection section)
    {
        var name = section.Name;
        return !section.Flags.HasFlag(ElfSectionFlags.Alloc)
            || name.StartsWith(".discard", StringComparison.Ordinal)
                || name.StartsWith(".initcall", StringComparison.Ordinal)
            || name.StartsWith("__ksymtab", StringComparison.Ordinal)
                || name.StartsWith("___ksymtab", StringComparison.Ordinal)
            || name.StartsWith("__kcrctab", StringComparison.Ordinal)
                || name.StartsWith("__kstrtab", StringComparison.Ordinal)
            || name is ".modinfo" or "__param" or ".export_symbol" or "__tracepoints_ptrs" or "__tracepoints_strings"
                or ".orc_unwind"
                or ".static_call_tramp_key" or "__syscalls_metadata" or "_ftrace_events"
                or "_ftrace_eval_map" or "__bpf_raw_tp_map"
            || name.StartsWith(".init.", StringComparison.Ordinal)
                || name.StartsWith(".exit.", StringComparison.Ordinal)
            || name.StartsWith(".note", StringComparison.Ordinal) || KernelNames.IsFragmentSection(name);
    }

    public static Table? Find(string name) => Tables.FirstOrDefault(t => t.Name == name);

    /// <summary>
    /// The tables objtool writes (rather than the compiler or the assembler), and skips writing for a whole object when
    /// one of its inputs has them already ("file already has .return_sites, skipping").
    /// </summary>
    public static bool WrittenByObjtool(Table table) =>
        table.Name is KernelNames.StaticCallSites or ".retpoline_sites" or ".return_sites" or ".call_sites"
            or ".ibt_endbr_seal" or ".cfi_sites";

    /// <summary>The entry size whose relocation layout repeats through the whole table, or null.</summary>
    public static int? EntrySize(Table table, ElfSection section, IReadOnlyList<ElfRelocation> relocations)
    {
        foreach (var size in table.EntrySizes)
        {
            if (EntryCount(table, section, size) is not { } count) continue;
            // An empty table has no entries to lay out, unless relocations claim places in it (a malformed size).
            if (count == 0) return relocations.Count == 0 ? size : null;
            var pattern = relocations.Where(r => r.Offset < (ulong)size).Select(r => r.Offset).ToList();
            var consistent = relocations.Count == pattern.Count * count
                && relocations.Select((r, i) => r.Offset == (ulong)(i / pattern.Count) * (ulong)size
                    + pattern[i % pattern.Count]).All(x => x);
            if (consistent) return size;
        }
        return null;
    }

    /// <summary>
    /// How many entries of <paramref name="size"/> the table holds, its last one possibly short; null when none fits.
    /// </summary>
    public static int? EntryCount(Table table, ElfSection section, int size)
    {
        if (section.Size % (ulong)size == 0) return (int)(section.Size / (ulong)size);
        var padding = (ulong)(size - table.ShortLastEntry);
        if (table.ShortLastEntry > 0 && (section.Size + padding) % (ulong)size == 0)
            return (int)((section.Size + padding) / (ulong)size);
        return null;
    }

    /// <summary>
    /// Entry <paramref name="index"/> as <paramref name="size"/> bytes; a short last entry gets its padding as zeroes.
    /// </summary>
    public static byte[] Entry(ElfDataSection section, int index, int size)
    {
        var entry = new byte[size];
        var start = index * size;
        section.Data.AsSpan(start, Math.Min(size, section.Data.Length - start)).CopyTo(entry);
        return entry;
    }
}
