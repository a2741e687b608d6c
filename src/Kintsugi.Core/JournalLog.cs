namespace Kintsugi;

/// <summary>
/// Lines for systemd's journal: when standard error is the journal's stream (<c>$JOURNAL_STREAM</c> names it),
/// each line starts with its syslog priority (<c>&lt;3&gt;</c> error, <c>&lt;4&gt;</c> warning,
/// <c>&lt;6&gt;</c> info), so <c>journalctl -p err -u kintsugi-agent</c> shows the errors only.
/// Elsewhere lines are printed as they are.
/// </summary>
public static class JournalLog
{
    public const int Error = 3;
    public const int Warning = 4;
    public const int Info = 6;

    private static readonly Lazy<bool> ToJournal =
        new(() => IsJournalStream(Environment.GetEnvironmentVariable("JOURNAL_STREAM"), StandardErrorInode()));

    /// <summary>Whether <paramref name="journalStream"/> ("device:inode") is the stream whose inode standard error
    /// has.</summary>
    public static bool IsJournalStream(string? journalStream, string? stderrInode) =>
        journalStream is { Length: > 0 } && stderrInode is not null && journalStream.Split(':') is [_, var inode]
        && inode == stderrInode;

    private static string? StandardErrorInode()
    {
        try
        {
            // /proc/self/fd/2 -> "socket:[12345]" when it is the journal's socket.
            var target = new FileInfo("/proc/self/fd/2").LinkTarget;
            return target is not null && target.StartsWith("socket:[", StringComparison.Ordinal)
                ? target["socket:[".Length..^1] : null;
        }
        catch (IOException) { return null; }
    }

    /// <summary>The line as written: with its priority prefix when it goes to the journal.</summary>
    public static string Format(int priority, string line, bool toJournal) => toJournal ? $"<{priority}>{line}" : line;

    public static void Write(int priority, string line) =>
        Console.Error.WriteLine(Format(priority, line, ToJournal.Value));

    /// <summary>
    /// The agent's messages by what they say: failures and refusals are errors, retries and the kill switch
    /// warnings, the rest information.
    /// </summary>
    public static int PriorityOf(string message) =>
        message.StartsWith("error", StringComparison.Ordinal)
        || message.Contains("could not be applied", StringComparison.Ordinal) ||
        message.Contains("refused", StringComparison.Ordinal)
        || message.Contains("quarantined", StringComparison.Ordinal) ? Error
        : message.Contains("retrying", StringComparison.Ordinal)
        || message.Contains("disabled", StringComparison.Ordinal) ? Warning
        : Info;

    public static Action<string> Agent => message => Write(PriorityOf(message), $"kintsugi-agent: {message}");
}
