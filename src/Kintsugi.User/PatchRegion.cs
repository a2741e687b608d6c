using System.Buffers.Binary;
using System.Text;

namespace Kintsugi.User;

/// <summary>One function redirected by an applied patch, as recorded in the patch's region.</summary>
public sealed record RedirectedFunction(ulong Entry, ulong Replacement, uint Size, byte[] SavedBytes);

/// <summary>
/// A patch applied in a process, read back from the process's memory: the region's header is the only record
/// of it (the tool keeps no state about processes), and holds what revert needs: every overwritten byte.
/// </summary>
public sealed record
    AppliedPatch(ulong Start, ulong Size, string PatchId, string Name, BuildId Target, ulong ObjectBase,
    IReadOnlyList<RedirectedFunction> Functions)
{
    public ulong End => Start + Size;
}

/// <summary>
/// The layout of a patch region: a header (magic, patch id, target, and for each redirected function its entry,
/// replacement and the original bytes the jump overwrote), then the relocated code.
/// </summary>
internal static class PatchRegion
{
    public static ReadOnlySpan<byte> Magic => "KINTSUGI-UPATCH\0"u8;
    private const int Version = 1;
    private const int FixedHeader = 208;
    private const int FunctionRecord = 32;
    public const ulong PageSize = 4096;

    public static int CodeOffset(int functionCount) => (FixedHeader + FunctionRecord * functionCount + 63) & ~63;

    public static ulong RegionSize(UserPatch patch) =>
        ((ulong)(CodeOffset(patch.Functions.Count) + patch.Code.Length) + PageSize - 1) & ~(PageSize - 1);

    public static byte[] Header(UserPatch patch, ulong regionStart, ulong objectBase, IReadOnlyList<byte[]> savedBytes)
    {
        var header = new byte[CodeOffset(patch.Functions.Count)];
        var span = header.AsSpan();
        Magic.CopyTo(span);
        BinaryPrimitives.WriteInt32LittleEndian(span[16..], Version);
        BinaryPrimitives.WriteInt32LittleEndian(span[20..], header.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(span[24..], RegionSize(patch));
        patch.Id.CopyTo(span[32..]);
        BinaryPrimitives.WriteUInt64LittleEndian(span[64..], objectBase);
        BinaryPrimitives.WriteInt32LittleEndian(span[72..], patch.Functions.Count);
        var buildId = Convert.FromHexString(patch.Target.BuildId.ToString());
        span[80] = (byte)buildId.Length;
        buildId.CopyTo(span[81..144]);
        Encoding.ASCII.GetBytes(patch.Name).CopyTo(span[144..208]);
        var code = regionStart + (ulong)header.Length;
        for (var i = 0; i < patch.Functions.Count; i++)
        {
            var f = patch.Functions[i];
            var record = span.Slice(FixedHeader + i * FunctionRecord, FunctionRecord);
            BinaryPrimitives.WriteUInt64LittleEndian(record, objectBase + f.Address);
            BinaryPrimitives.WriteUInt64LittleEndian(record[8..], code + f.Replacement);
            savedBytes[i].CopyTo(record[16..24]);
            BinaryPrimitives.WriteUInt32LittleEndian(record[24..], f.Size);
        }
        return header;
    }

    /// <summary>Reads a region's header; null when the memory does not start with a valid Kintsugi header.</summary>
    public static AppliedPatch? Parse(ulong start, ulong mappingSize, ReadOnlySpan<byte> memory)
    {
        if (memory.Length < FixedHeader || !memory[..16].SequenceEqual(Magic)) return null;
        if (BinaryPrimitives.ReadInt32LittleEndian(memory[16..]) != Version) return null;
        var headerSize = BinaryPrimitives.ReadInt32LittleEndian(memory[20..]);
        var size = BinaryPrimitives.ReadUInt64LittleEndian(memory[24..]);
        var count = BinaryPrimitives.ReadInt32LittleEndian(memory[72..]);
        if (count is < 1 or > UserPatch.MaxFunctions || headerSize != CodeOffset(count) || headerSize > memory.Length)
            return null;
        if (size > mappingSize || size == 0) return null;
        var buildIdLength = memory[80];
        if (buildIdLength is < 4 or > 63) return null;
        var name = Encoding.ASCII.GetString(memory[144..208]).TrimEnd('\0');
        var functions = new List<RedirectedFunction>();
        for (var i = 0; i < count; i++)
        {
            var record = memory.Slice(FixedHeader + i * FunctionRecord, FunctionRecord);
            functions.Add(new RedirectedFunction(BinaryPrimitives.ReadUInt64LittleEndian(record),
                BinaryPrimitives.ReadUInt64LittleEndian(record[8..]),
                BinaryPrimitives.ReadUInt32LittleEndian(record[24..]),
                record[16..(16 + UserPatch.RedirectSize)].ToArray()));
        }
        return new AppliedPatch(start, size, Convert.ToHexStringLower(memory[32..64]), name,
            BuildId.FromBytes(memory.Slice(81, buildIdLength)),
            BinaryPrimitives.ReadUInt64LittleEndian(memory[64..]), functions);
    }

    /// <summary>The patches applied in a process: anonymous executable mappings that start with a Kintsugi
    /// header.</summary>
    public static IReadOnlyList<AppliedPatch> Find(ProcessMaps maps, ProcessMemory memory)
    {
        var found = new List<AppliedPatch>();
        var buffer = new byte[CodeOffset(UserPatch.MaxFunctions)];
        foreach (var mapping in maps.Mappings.Where(m => m.IsAnonymous && m.Executable && m.Readable))
        {
            var read =
                memory.TryRead(mapping.Start, buffer.AsSpan(0, (int)Math.Min((ulong)buffer.Length, mapping.Size)));
            if (Parse(mapping.Start, mapping.Size, buffer.AsSpan(0, read)) is { } patch) found.Add(patch);
        }
        return found;
    }

    /// <summary>The 5-byte <c>jmp rel32</c> from a function's entry to its replacement.</summary>
    public static byte[] Jump(ulong from, ulong to)
    {
        var displacement = (long)to - (long)(from + UserPatch.RedirectSize);
        if (displacement is < int.MinValue or > int.MaxValue)
            throw new InvalidOperationException("jump out of reach: placement must prevent this");
        var jump = new byte[UserPatch.RedirectSize];
        jump[0] = 0xe9;
        BinaryPrimitives.WriteInt32LittleEndian(jump.AsSpan(1), (int)displacement);
        return jump;
    }
}
