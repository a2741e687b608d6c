using System.Buffers.Binary;

namespace Kintsugi.User;

/// <summary>An ELF object (by build-id) as mapped on the machine: its file name and the processes that map
/// it.</summary>
public sealed record MappedObject(BuildId BuildId, string Name, IReadOnlyList<int> Processes);

/// <summary>An ELF object mapped in a process: its file, where it is loaded and its build-id (read from
/// memory).</summary>
public sealed record
    LoadedObject(string Path, string Device, ulong Inode, ulong LoadBase, ulong Start, ulong End, BuildId? BuildId)
{
    public string FileName => System.IO.Path.GetFileName(Path.EndsWith(" (deleted)") ? Path[..^10] : Path);

    /// <summary>
    /// The ELF objects of a process, in the order they are mapped. The build-id comes from the process's
    /// memory, not the file on disk, which may have been upgraded since the process started.
    /// </summary>
    public static IReadOnlyList<LoadedObject> Find(ProcessMaps maps, ProcessMemory memory) => Find(maps, memory, null);

    /// <summary>
    /// Only the objects that may have <paramref name="wanted"/> as build-id, when scanning many processes: an
    /// object known (by device and inode, in <paramref name="known"/>) to have another build-id is not read again.
    /// </summary>
    public static IReadOnlyList<LoadedObject>
        Find(ProcessMaps maps, ProcessMemory memory, BuildId wanted, Dictionary<(string, ulong), BuildId?> known) =>
        Find(maps, memory, (wanted, known));

    private static IReadOnlyList<LoadedObject> Find(ProcessMaps maps, ProcessMemory memory,
        (BuildId Wanted, Dictionary<(string, ulong), BuildId?> Known)? filter)
    {
        var objects = new List<LoadedObject>();
        var seen = new HashSet<(string, ulong)>();
        foreach (var first in maps.Mappings)
        {
            if (!first.IsFile || first.Offset != 0 || !seen.Add((first.Device, first.Inode))) continue;
            if (filter is { } f && f.Known.TryGetValue((first.Device, first.Inode), out var id) && id != f.Wanted)
                continue;
            var parts = maps.Mappings.Where(m => m.Device == first.Device && m.Inode == first.Inode).ToList();
            var loaded = Read(first, parts, memory);
            if (filter is { } g) g.Known[(first.Device, first.Inode)] = loaded?.BuildId;
            if (loaded is not null) objects.Add(loaded);
        }
        return objects;
    }

    private static LoadedObject? Read(MemoryMapping first, List<MemoryMapping> parts, ProcessMemory memory)
    {
        Span<byte> header = stackalloc byte[64];
        if (memory.TryRead(first.Start, header) != 64 || header[0] != 0x7f || header[1] != (byte)'E'
            || header[2] != (byte)'L'
            || header[3] != (byte)'F' || header[4] != 2 || BinaryPrimitives.ReadUInt16LittleEndian(header[18..]) != 62)
            return null;
        var phoff = BinaryPrimitives.ReadUInt64LittleEndian(header[32..]);
        var phnum = BinaryPrimitives.ReadUInt16LittleEndian(header[56..]);
        if (phnum == 0 || phnum > 64 || phoff + phnum * 56UL > first.Size) return null;
        var phdrs = new byte[phnum * 56];
        if (memory.TryRead(first.Start + phoff, phdrs) != phdrs.Length) return null;
        ulong? firstLoad = null;
        var notes = new List<(ulong Address, ulong Size)>();
        for (var i = 0; i < phnum; i++)
        {
            var p = phdrs.AsSpan(i * 56, 56);
            var type = BinaryPrimitives.ReadUInt32LittleEndian(p);
            var vaddr = BinaryPrimitives.ReadUInt64LittleEndian(p[16..]);
            if (type == ElfSegment.Load && firstLoad is null) firstLoad = vaddr & ~0xfffUL;
            if (type == ElfSegment.Note)
                notes.Add((vaddr, Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(p[32..]), 4096)));
        }
        if (firstLoad is null) return null;
        var loadBase = first.Start - firstLoad.Value;
        BuildId? buildId = null;
        foreach (var (address, size) in notes)
        {
            var bytes = new byte[size];
            if (memory.TryRead(loadBase + address, bytes) != bytes.Length) continue;
            try { buildId = Kintsugi.BuildId.FromNotes(bytes); }
            catch (FormatException) { }
            if (buildId is not null) break;
        }
        return new LoadedObject(first.Path, first.Device, first.Inode, loadBase, parts.Min(p => p.Start),
            parts.Max(p => p.End), buildId);
    }
}
