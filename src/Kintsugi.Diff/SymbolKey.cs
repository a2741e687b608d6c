using System.Collections.Immutable;

namespace Kintsugi.Diff;

internal enum SymbolKeyKind
{
    /// <summary>Functions, their cold parts and data: the name is the identity.</summary>
    Named,
    /// <summary>A numbered static local: base name, users and rank, since its number changes with any edit of the
    /// unit.</summary>
    NumberedStatic,
    /// <summary>A per-use static (<see cref="KernelNames.IsPerUseStatic"/>): never matched with anything.</summary>
    PerUse,
}

/// <summary>
/// What identifies a function or data object across two compilations of one unit: its name; for a numbered static
/// local, its base name, the functions that use it and its rank among the statics with that base name and users.
/// </summary>
internal readonly struct SymbolKey : IEquatable<SymbolKey>
{
    private readonly ImmutableArray<string> _users;

    private SymbolKey(SymbolKeyKind kind, string name, ImmutableArray<string> users, int rank)
    {
        Kind = kind;
        Name = name;
        _users = users;
        Rank = rank;
    }

    public SymbolKeyKind Kind { get; }

    /// <summary>The symbol's name, or a numbered static's base name.</summary>
    public string Name { get; }

    /// <summary>For a numbered static: the functions (by name) that use it, sorted.</summary>
    public ImmutableArray<string> Users => _users.IsDefault ? [] : _users;

    /// <summary>For a numbered static: its rank by number among the statics of the same base name and users.</summary>
    public int Rank { get; }

    public static SymbolKey Named(string name) => new(SymbolKeyKind.Named, name, [], 0);

    public static SymbolKey PerUse(string name) => new(SymbolKeyKind.PerUse, name, [], 0);

    public static SymbolKey NumberedStatic(string baseName, IEnumerable<string> users, int rank) =>
        new(SymbolKeyKind.NumberedStatic, baseName, [.. users.Order(StringComparer.Ordinal)], rank);

    public bool Equals(SymbolKey other) =>
        Kind == other.Kind && string.Equals(Name, other.Name, StringComparison.Ordinal) && Rank == other.Rank
        && Users.SequenceEqual(other.Users, StringComparer.Ordinal);

    public override bool Equals(object? obj) => obj is SymbolKey other && Equals(other);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Kind);
        hash.Add(Name, StringComparer.Ordinal);
        hash.Add(Rank);
        foreach (var user in Users) hash.Add(user, StringComparer.Ordinal);
        return hash.ToHashCode();
    }

    public static bool operator ==(SymbolKey left, SymbolKey right) => left.Equals(right);

    public static bool operator !=(SymbolKey left, SymbolKey right) => !left.Equals(right);

    /// <summary>For traces and messages: <c>name</c>, <c>special:name</c>, or
    /// <c>base&lt;user,user&gt;#rank</c>.</summary>
    public override string ToString() => Kind switch
    {
        SymbolKeyKind.PerUse => "special:" + Name,
        SymbolKeyKind.NumberedStatic => $"{Name}<{string.Join(",", Users)}>#{Rank}",
        _ => Name ?? "",
    };
}
