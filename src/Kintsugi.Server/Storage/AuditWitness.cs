using System.Globalization;

namespace Kintsugi.Server.Storage;

/// <summary>One event of the audit chain: its sequence number and hash.</summary>
public sealed record AuditHead(long Seq, string Hash);

/// <summary>
/// The audit chain's head as this server last wrote it, kept outside the database (a file in the data directory,
/// owner-only): whoever restores an older copy of the database, or rewrites the chain and its head together, cannot
/// also move this file back. Verification compares the chain against it: a chain that ends before the head seen
/// here was rolled back; one whose event at that number has another hash was rewritten. The file only moves
/// forward. After restoring a backup on purpose, move the file away (and note the head it held).
/// </summary>
public sealed class AuditWitness
{
    private readonly Lock gate = new();

    public AuditWitness(string path)
    {
        Path = path;
        Head = Read(path);
    }

    public string Path { get; }

    /// <summary>The newest head this server wrote, or null before the first event (or when the file was moved
    /// away).</summary>
    public AuditHead? Head { get; private set; }

    /// <summary>Unreadable contents: the file was damaged or replaced by hand.</summary>
    public string? Damage { get; private set; }

    /// <summary>Records <paramref name="head"/>, committed to the database, when it is newer than the one
    /// kept.</summary>
    public void Advance(AuditHead head)
    {
        lock (gate)
        {
            if (Head is { } kept && kept.Seq >= head.Seq) return;
            // Not flushed to disk: after a crash the file may lag the database by the last events, which is safe
            // (it never claims more than the database had).
            OwnerOnly.WriteText(Path, $"{head.Seq.ToString(CultureInfo.InvariantCulture)} {head.Hash}\n",
                durable: false);
            Head = head;
        }
    }

    private AuditHead? Read(string path)
    {
        string text;
        try { text = File.ReadAllText(path).Trim(); }
        catch (FileNotFoundException) { return null; }
        var parts = text.Split(' ');
        if (parts.Length == 2 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var seq)
            && parts[1].Length == 64 && parts[1].All(char.IsAsciiHexDigitLower))
            return new AuditHead(seq, parts[1]);
        Damage = $"{path} does not hold an audit head (\"SEQ HASH\"): it was damaged or edited";
        return null;
    }

    /// <summary>What the chain read from the database contradicts of what this server wrote, or null.</summary>
    /// <param name="lastSeq">The chain's last event.</param>
    /// <param name="hashAtHead">The chain's hash of event <see cref="Head"/>.Seq, when it has that event.</param>
    public string? Contradiction(long lastSeq, string? hashAtHead)
    {
        if (Damage is not null) return Damage;
        if (Head is not { } head) return null;
        if (head.Seq > lastSeq)
            return $"the database was rolled back: this server wrote event {head.Seq} (kept in {Path}), the log ends " +
                $"at " +
                $"{lastSeq} (restored from an older copy, or the newest events were removed with the head)";
        if (hashAtHead != head.Hash)
            return $"event {head.Seq} is not the one this server wrote (kept in {Path}): the log was rewritten";
        return null;
    }
}
