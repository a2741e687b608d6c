using System.Globalization;
using System.Text.RegularExpressions;

namespace Kintsugi.Elf.Tests.Support;

/// <summary>What binutils' readelf says about an object, parsed for cross-checks.</summary>
internal static partial class Readelf
{
    public sealed record Symbol(int Index, ulong Value, ulong Size, string Type, string Binding, string Visibility,
        string SectionIndex, string Name);

    public sealed record Relocation(string Section, ulong Offset, ulong Info, string TypeName, long Addend);

    public sealed record Group(string Name, string Signature, bool IsComdat, int[] Members);

    /// <summary>readelf -sW: the entries of .symtab, index 0 included.</summary>
    public static List<Symbol> Symbols(string path)
    {
        var symbols = new List<Symbol>();
        foreach (var line in Tool.Run("readelf", "-sW", path).Split('\n'))
        {
            var match = SymbolLine().Match(line);
            if (match.Success)
            {
                symbols.Add(new Symbol(
                    int.Parse(match.Groups["num"].Value, CultureInfo.InvariantCulture),
                    ulong.Parse(match.Groups["value"].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                    ParseSize(match.Groups["size"].Value),
                    match.Groups["type"].Value,
                    match.Groups["bind"].Value,
                    match.Groups["vis"].Value,
                    match.Groups["ndx"].Value,
                    match.Groups["name"].Value));
            }
        }

        return symbols;
    }

    /// <summary>readelf -rW: every relocation with the name of its relocation section.</summary>
    public static List<Relocation> Relocations(string path)
    {
        var relocations = new List<Relocation>();
        string section = string.Empty;
        foreach (var line in Tool.Run("readelf", "-rW", path).Split('\n'))
        {
            var header = RelocationSectionLine().Match(line);
            if (header.Success)
            {
                section = header.Groups["name"].Value;
                continue;
            }

            var match = RelocationLine().Match(line);
            if (!match.Success)
            {
                continue;
            }

            long addend = 0;
            var addendMatch = AddendTail().Match(line);
            if (addendMatch.Success)
            {
                addend = (long)ulong.Parse(addendMatch.Groups["value"].Value, NumberStyles.HexNumber,
                    CultureInfo.InvariantCulture);
                if (addendMatch.Groups["sign"].Value == "-")
                {
                    addend = -addend;
                }
            }

            relocations.Add(new Relocation(
                section,
                ulong.Parse(match.Groups["offset"].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                ulong.Parse(match.Groups["info"].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                match.Groups["type"].Value,
                addend));
        }

        return relocations;
    }

    /// <summary>readelf -gW: section groups with their signature and member section indexes.</summary>
    public static List<Group> Groups(string path)
    {
        var groups = new List<Group>();
        string? name = null, signature = null;
        bool comdat = false;
        var members = new List<int>();
        void Flush()
        {
            if (name is not null)
            {
                groups.Add(new Group(name, signature!, comdat, [.. members]));
            }

            members.Clear();
        }

        foreach (var line in Tool.Run("readelf", "-gW", path).Split('\n'))
        {
            var header = GroupLine().Match(line);
            if (header.Success)
            {
                Flush();
                comdat = header.Groups["kind"].Value == "COMDAT";
                name = header.Groups["name"].Value;
                signature = header.Groups["signature"].Value;
                continue;
            }

            var member = GroupMemberLine().Match(line);
            if (member.Success && name is not null)
            {
                members.Add(int.Parse(member.Groups["index"].Value, CultureInfo.InvariantCulture));
            }
        }

        Flush();
        return groups;
    }

    private static ulong ParseSize(string text) => text.StartsWith("0x", StringComparison.Ordinal)
        ? ulong.Parse(text.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture)
        : ulong.Parse(text, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^\s*(?<num>\d+):\s+(?<value>[0-9a-f]+)\s+(?<size>0x[0-9a-f]+|\d+)\s+(?<type>\S+)\s+(?<bind>\S+)" +
        @"\s+(?<vis>\S+)\s+(?<ndx>\S+)\s?(?<name>.*)$")]
    private static partial Regex SymbolLine();

    [GeneratedRegex(@"^Relocation section '(?<name>[^']+)'")]
    private static partial Regex RelocationSectionLine();

    [GeneratedRegex(@"^(?<offset>[0-9a-f]{16})\s+(?<info>[0-9a-f]{16})\s+(?<type>\S+)")]
    private static partial Regex RelocationLine();

    [GeneratedRegex(@"(?:(?<sign>[+-])\s)?(?<value>[0-9a-f]+)\s*$")]
    private static partial Regex AddendTail();

    [GeneratedRegex(@"^(?:(?<kind>COMDAT) )?group section \[\s*\d+\] `(?<name>[^']*)' \[(?<signature>[^\]]*)\]")]
    private static partial Regex GroupLine();

    [GeneratedRegex(@"^\s+\[\s*(?<index>\d+)\]\s+\S")]
    private static partial Regex GroupMemberLine();
}
