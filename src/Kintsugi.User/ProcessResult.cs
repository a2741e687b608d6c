using System.Text.Json.Serialization;

namespace Kintsugi.User;

/// <summary>What happened to one process.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ProcessOutcome>))]
public enum ProcessOutcome
{
    Applied,
    AlreadyApplied,
    Reverted,
    NotApplied,
    /// <summary>The process does not map the patch's target object.</summary>
    NotTarget,
    /// <summary>A thread stayed inside a replaced function for the whole wait; nothing was changed.</summary>
    Busy,
    Failed,
    /// <summary>The process exited before or while Kintsugi reached it (a short-lived worker): nothing left to
    /// patch.</summary>
    Exited,
}

/// <summary>
/// The result for one process: the outcome, how long its threads were stopped in the attempt that changed it
/// (the pause it saw), how many attempts it took, and the reason when it failed.
/// </summary>
public sealed record ProcessResult(int Pid, string Command, ProcessOutcome Outcome, double PauseMilliseconds,
    double TotalPauseMilliseconds,
    int Attempts, int Threads, string? Message)
{
    public bool Succeeded => Outcome is ProcessOutcome.Applied or ProcessOutcome.AlreadyApplied
        or ProcessOutcome.Reverted or ProcessOutcome.NotApplied
        or ProcessOutcome.Exited;
}
