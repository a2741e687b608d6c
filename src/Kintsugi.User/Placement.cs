namespace Kintsugi.User;

/// <summary>
/// Where a patch region can go: a free range of the address space within ±2 GiB of every byte of the target
/// object (the 5-byte jumps and the code's 32-bit references must reach), a guard page away from its
/// neighbours (so it never merges with them), never where the heap or a stack grows.
/// </summary>
internal static class Placement
{
    private const ulong Page = 4096;
    private const ulong Reach = (1UL << 31) - (1UL << 20); // a MiB short of 2 GiB: addends and rounding
    private const ulong Lowest = 0x10000;                  // vm.mmap_min_addr
    private const ulong Highest = 0x7fff_ffff_f000;        // end of the 47-bit user address space

    /// <summary>Candidate start addresses, nearest to the object first.</summary>
    public static IReadOnlyList<ulong> Candidates(ProcessMaps maps, ulong objectStart, ulong objectEnd, ulong size)
    {
        var allowedLow = objectEnd > Reach ? objectEnd - Reach : Lowest;
        var allowedHigh = objectStart + Reach - size;
        var candidates = new List<(ulong Address, ulong Distance)>();
        var mappings = maps.Mappings;
        for (var i = 0; i <= mappings.Count; i++)
        {
            var below = i > 0 ? mappings[i - 1] : null;
            var above = i < mappings.Count ? mappings[i] : null;
            if (above?.Path == "[stack]") continue;             // room the main stack grows into
            var low = Math.Max((below?.End ?? Lowest) + Page, Lowest);
            if (below?.Path == "[heap]") low += 1UL << 30;       // room brk grows into
            var high = (above?.Start ?? Highest) - Page;
            if (high < low || high - low < size) continue;
            var first = Math.Max(low, allowedLow);
            var last = Math.Min(high - size, allowedHigh);
            if (first > last) continue;
            first = (first + Page - 1) & ~(Page - 1);
            last &= ~(Page - 1);
            if (first > last) continue;
            // Nearest point of the gap to the object.
            var address = last < objectStart ? last : first;
            var distance = address < objectStart ? objectStart - address : address - objectEnd;
            candidates.Add((address, distance));
        }
        return candidates.OrderBy(c => c.Distance).Select(c => c.Address).ToList();
    }
}
