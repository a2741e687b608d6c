namespace Kintsugi.Kernel;

/// <summary>A task that has not yet switched to the transition's target state, with where it sleeps.</summary>
public sealed record BlockingTask(int Pid, int Tid, string Command, IReadOnlyList<string> Stack)
{
    /// <summary>Lists the tasks whose /proc/*/task/*/patch_state differs from <paramref name="targetState"/>.</summary>
    public static IReadOnlyList<BlockingTask> Find(int targetState)
    {
        var blocking = new List<BlockingTask>();
        foreach (var processDir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(processDir), out var pid)) continue;
            IEnumerable<string> threads;
            try { threads = Directory.GetDirectories(Path.Combine(processDir, "task")); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; } // exited meanwhile
            foreach (var threadDir in threads)
            {
                if (!int.TryParse(Path.GetFileName(threadDir), out var tid)) continue;
                var state = TryRead(Path.Combine(threadDir, "patch_state"));
                // -1 means no transition is in progress for this task; anything else but the target blocks.
                if (state is null || !int.TryParse(state, out var value) || value == -1 || value == targetState)
                    continue;
                var command = TryRead(Path.Combine(threadDir, "comm")) ?? "?";
                var stack = (TryRead(Path.Combine(threadDir, "stack")) ?? "")
                    .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                blocking.Add(new BlockingTask(pid, tid, command, stack));
            }
        }
        return blocking;
    }

    private static string? TryRead(string path)
    {
        try { return File.ReadAllText(path).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    public override string ToString() =>
        $"pid {Pid} tid {Tid} ({Command})" + (Stack.Count == 0 ? "" : ":\n      " + string.Join("\n      ", Stack));
}
