using System.Globalization;

namespace Kintsugi.User;

/// <summary>One line of <c>/proc/PID/maps</c>.</summary>
public sealed record
    MemoryMapping(ulong Start, ulong End, string Permissions, ulong Offset, string Device, ulong Inode, string Path)
{
    public bool Readable => Permissions[0] == 'r';
    public bool Executable => Permissions[2] == 'x';
    public bool IsFile => Inode != 0 && Path.StartsWith('/');
    public bool IsAnonymous => Inode == 0 && Path.Length == 0;
    public ulong Size => End - Start;
    public bool Contains(ulong address) => address >= Start && address < End;

    public override string ToString() => $"{Start:x}-{End:x} {Permissions} {Path}";
}

/// <summary>The address space of a process, as <c>/proc/PID/maps</c> lists it (sorted by address).</summary>
public sealed class ProcessMaps
{
    public ProcessMaps(IReadOnlyList<MemoryMapping> mappings) => Mappings = mappings;

    public IReadOnlyList<MemoryMapping> Mappings { get; }

    public static ProcessMaps Read(int pid)
    {
        string text;
        try { text = File.ReadAllText($"/proc/{pid}/maps"); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new UserPatchException($"process {pid} does not exist", ExitCode.NotFound, e);
        }
        return Parse(text);
    }

    public static ProcessMaps Parse(string text)
    {
        var mappings = new List<MemoryMapping>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // start-end perms offset dev inode [path]; the path may contain spaces.
            var fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 5) throw new FormatException($"unexpected line in maps: '{line}'");
            var range = fields[0].Split('-');
            mappings.Add(new MemoryMapping(
                ulong.Parse(range[0], NumberStyles.HexNumber), ulong.Parse(range[1], NumberStyles.HexNumber),
                fields[1], ulong.Parse(fields[2], NumberStyles.HexNumber), fields[3],
                ulong.Parse(fields[4], CultureInfo.InvariantCulture), fields.Length > 5 ? fields[5].Trim() : ""));
        }
        return new ProcessMaps(mappings);
    }

    public MemoryMapping? Find(ulong address)
    {
        foreach (var mapping in Mappings) if (mapping.Contains(address)) return mapping;
        return null;
    }
}
