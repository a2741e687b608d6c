namespace Kintsugi.Diff;

/// <summary>
/// The correlate phase: links each function and data object of the original with its counterpart in the patched
/// object (its twin), once, before anything is compared. Most have the same key; a numbered static whose users
/// changed is matched by the users it keeps. Per-use statics are never linked: new code gets copies of its own.
/// </summary>
internal static class Correlation
{
    /// <returns>The statics linked by their users rather than by their keys, as (original, patched) pairs.</returns>
    public static IReadOnlyList<(DefinedSymbol Original, DefinedSymbol Patched)> Link(ObjectView original,
        ObjectView patched)
    {
        foreach (var (key, after) in patched.ByKey)
            if (key.Kind != SymbolKeyKind.PerUse && original.ByKey.TryGetValue(key, out var before))
                DefinedSymbol.Link(before, after);
        return LinkStaticsByUsers(original, patched);
    }

    /// <summary>
    /// A static whose users changed (one in an inline helper that gained or lost a caller) has a different key in
    /// each object, yet it is the same variable: the patched code must keep using the running one, not a fresh copy.
    /// It is matched when, among the statics of its base name left unmatched, exactly one on each side shares a
    /// user with the other.
    /// </summary>
    private static List<(DefinedSymbol, DefinedSymbol)> LinkStaticsByUsers(ObjectView original, ObjectView patched)
    {
        var matched = new List<(DefinedSymbol, DefinedSymbol)>();
        var unmatchedBefore = original.NumberedStatics.Where(d => d.Twin is null).ToList();
        var unmatchedAfter = patched.NumberedStatics.Where(d => d.Twin is null).ToList();
        foreach (var after in unmatchedAfter)
        {
            var baseName = after.Key.Name;
            var candidates = unmatchedBefore.Where(b => b.Key.Name == baseName
                && b.Users!.Overlaps(after.Users!)).ToList();
            if (candidates.Count != 1) continue;
            var before = candidates[0];
            if (unmatchedAfter.Any(a => a != after && a.Key.Name == baseName
                && a.Users!.Overlaps(before.Users!))) continue;
            DefinedSymbol.Link(before, after);
            unmatchedBefore.Remove(before);
            matched.Add((before, after));
        }
        return matched;
    }
}
