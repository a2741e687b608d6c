using System.Diagnostics;

namespace Kintsugi.User.Tests;

/// <summary>Patching a running multi-threaded program, and reverting it, many times over.</summary>
public sealed class ApplyRevertSpecification : IDisposable
{
    private readonly CompiledPrograms _programs = new();

    public void Dispose() => _programs.Dispose();

    [Fact]
    public void A_patched_function_runs_the_new_code_in_every_thread_and_a_reverted_one_the_old()
    {
        var (program, patch) = _programs.LoopProgramAndPatch();
        using var target = new RunningTarget(program, "4");
        var patcher = new UserPatcher();

        var applied = patcher.Apply(target.Pid, patch);

        Assert.True(applied.Outcome == ProcessOutcome.Applied, applied.Message);
        var oldCalls = target.ReadGlobal(program, "old_calls");
        WaitUntil(() => target.ReadGlobal(program, "new_calls") > 1000, "the new code runs");
        Assert.Equal(oldCalls, target.ReadGlobal(program, "old_calls"));
        Assert.Equal(patch.IdHex, Assert.Single(UserPatcher.List(target.Pid)).PatchId);

        var reverted = patcher.Revert(target.Pid);

        Assert.True(reverted.Outcome == ProcessOutcome.Reverted, reverted.Message);
        var newCalls = target.ReadGlobal(program, "new_calls");
        WaitUntil(() => target.ReadGlobal(program, "old_calls") > oldCalls + 1000, "the old code runs again");
        Assert.Equal(newCalls, target.ReadGlobal(program, "new_calls"));
        Assert.Empty(UserPatcher.List(target.Pid));
        Assert.True(target.Alive, target.Output);
    }

    internal static void WaitUntil(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"timed out waiting until {what}");
            Thread.Sleep(1);
        }
    }
}
