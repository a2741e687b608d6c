namespace Kintsugi.User;

/// <summary>An address range [Start, End] of code that no thread may be executing or return into.</summary>
public readonly record struct CodeRange(ulong Start, ulong End, string Name)
{
    public bool Contains(ulong address) => address >= Start && address <= End;
}

/// <summary>
/// Whether a thread is executing, or will return into, code being replaced. First the thread's stack is unwound
/// with the objects' <c>.eh_frame</c> (no frame pointers needed): when that unwind is certain down to the
/// outermost frame, the return addresses it finds decide. When it is not (code without unwind information, a
/// signal frame, anything not understood), the check falls back to a conservative scan: every 8-byte word of
/// the thread's live stack (from the stack pointer to the end of its mapping) that points into a range counts as
/// a return address. That cannot miss a frame; a stale word can only make the check wait and retry. So an unwind
/// problem never reads as "safe".
/// </summary>
internal static class StackCheck
{
    private const int MaxStackBytes = 8 << 20;

    /// <summary>Returns why the thread is busy, or null when it is safe.</summary>
    public static string?
        Busy(TracedThread thread, ProcessMaps maps, ProcessMemory memory, IReadOnlyList<CodeRange> ranges,
        StackUnwinder? unwinder = null)
    {
        var rip = thread.Registers.Rip;
        foreach (var range in ranges)
            if (range.Contains(rip) && rip != range.End) return $"thread {thread.Tid} is executing {range.Name}";
        if (unwinder?.ReturnAddresses(thread.Registers) is { } returns)
        {
            foreach (var address in returns)
                foreach (var range in ranges)
                    if (range.Contains(address)) return $"thread {thread.Tid} will return into {range.Name}";
            return null;
        }
        return ConservativeScan(thread, maps, memory, ranges);
    }

    /// <summary>Every word of the live stack that points into a range counts as a return address.</summary>
    public static string?
        ConservativeScan(TracedThread thread, ProcessMaps maps, ProcessMemory memory, IReadOnlyList<CodeRange> ranges)
    {
        var sp = thread.Registers.Rsp & ~7UL;
        var stack = maps.Find(sp);
        if (stack is null) return $"thread {thread.Tid}'s stack pointer 0x{sp:x} is not in mapped memory";
        var length = (int)Math.Min(stack.End - sp, MaxStackBytes);
        var words = new byte[length];
        var read = memory.TryRead(sp, words) & ~7;
        if (read < length) return $"thread {thread.Tid}'s stack cannot be read";
        var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(words.AsSpan(0, read));
        foreach (var value in values)
            foreach (var range in ranges)
                if (range.Contains(value)) return $"thread {thread.Tid} will return into {range.Name}";
        return null;
    }
}
