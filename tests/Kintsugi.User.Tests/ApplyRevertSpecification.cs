using System.Diagnostics;
using Kintsugi.User.Build;
using Xunit.Abstractions;

namespace Kintsugi.User.Tests;

/// <summary>Patching a running multi-threaded program, and reverting it, many times over.</summary>
public sealed class ApplyRevertSpecification(ITestOutputHelper output) : IDisposable
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

    [Fact]
    public void A_level_replaced_by_another_two_hundred_times_under_load_never_lets_a_thread_run_the_shipped_code()
    {
        var (program, first) = _programs.LoopProgramAndPatch();
        var second = PatchLinker.Link(program, _programs.Path_("loop-fixed.o"), ["compute"], "loop-compute-level-2");
        using var target = new RunningTarget(program, "8");
        var patcher = new UserPatcher();
        Assert.Equal(ProcessOutcome.Applied, patcher.Apply(target.Pid, first).Outcome);
        WaitUntil(() => target.ReadGlobal(program, "new_calls") > 1000, "the first level runs");
        // Calls that returned from the shipped code before the first freeze may be counted just after it.
        Thread.Sleep(20);
        var shippedCalls = target.ReadGlobal(program, "old_calls");
        var pauses = new List<double>();

        for (var cycle = 0; cycle < 200; cycle++)
        {
            var (from, to) = cycle % 2 == 0 ? (first, second) : (second, first);
            var replaced = patcher.Apply(target.Pid, to, a => a.PatchId == from.IdHex);
            Assert.True(replaced.Outcome == ProcessOutcome.Applied, $"cycle {cycle}: {replaced.Message}");
            Assert.Equal(to.IdHex, Assert.Single(UserPatcher.List(target.Pid)).PatchId);
            var newCalls = target.ReadGlobal(program, "new_calls");
            WaitUntil(() => target.ReadGlobal(program, "new_calls") > newCalls + 100, "the new level runs");
            Assert.Equal(shippedCalls, target.ReadGlobal(program, "old_calls"));
            pauses.Add(replaced.PauseMilliseconds);
        }

        Assert.True(target.Alive, target.Output);
        Assert.Equal(ProcessOutcome.Reverted, patcher.Revert(target.Pid).Outcome);
        var calls = target.ReadGlobal(program, "old_calls");
        WaitUntil(() => target.ReadGlobal(program, "old_calls") > calls + 100, "the shipped code runs once reverted");
        pauses.Sort();
        output.WriteLine($"200 replacements, 8 threads: pause median {pauses[100]:0.000} ms, worst " +
            $"{pauses[^1]:0.000} ms");
    }

    [Fact]
    public void
        Three_hundred_applications_and_reverts_under_load_never_run_old_code_after_apply_nor_new_code_after_revert()
    {
        var (program, patch) = _programs.LoopProgramAndPatch();
        using var target = new RunningTarget(program, "8");
        var patcher = new UserPatcher();
        var original = target.ReadFunction(program, "compute");
        var maps = target.Maps;
        var pauses = new List<double>();
        var retried = 0;

        for (var cycle = 0; cycle < 300; cycle++)
        {
            var applied = patcher.Apply(target.Pid, patch);
            Assert.True(applied.Outcome == ProcessOutcome.Applied, $"cycle {cycle}: {applied.Message}");
            var oldCalls = target.ReadGlobal(program, "old_calls");
            var newCalls = target.ReadGlobal(program, "new_calls");
            WaitUntil(() => target.ReadGlobal(program, "new_calls") > newCalls, "the new code runs");
            Assert.Equal(oldCalls, target.ReadGlobal(program, "old_calls"));

            var reverted = patcher.Revert(target.Pid);
            Assert.True(reverted.Outcome == ProcessOutcome.Reverted, $"cycle {cycle}: {reverted.Message}");
            newCalls = target.ReadGlobal(program, "new_calls");
            oldCalls = target.ReadGlobal(program, "old_calls");
            WaitUntil(() => target.ReadGlobal(program, "old_calls") > oldCalls, "the old code runs");
            Assert.Equal(newCalls, target.ReadGlobal(program, "new_calls"));

            pauses.Add(applied.PauseMilliseconds);
            retried += (applied.Attempts > 1 ? 1 : 0) + (reverted.Attempts > 1 ? 1 : 0);
        }

        Assert.True(target.Alive, target.Output);
        Assert.DoesNotContain("wrong result", target.Output);
        Assert.Equal(original, target.ReadFunction(program, "compute"));
        Assert.Equal(maps, target.Maps);
        pauses.Sort();
        output.WriteLine($"300 cycles, 9 threads: apply pause median {pauses[150]:0.000} ms, worst " +
            $"{pauses[^1]:0.000} ms; " +
            $"{retried} operations waited for a busy thread");
    }

    [Fact]
    public void A_thread_that_never_leaves_the_function_makes_the_apply_fail_and_leaves_the_process_as_it_was()
    {
        var (program, patch) = _programs.LoopProgramAndPatch();
        using var target = new RunningTarget(program, "2 stuck");
        var original = target.ReadFunction(program, "compute");
        var maps = target.Maps;

        var result = new UserPatcher(new PatcherOptions(TimeSpan.FromMilliseconds(300), TimeSpan.FromSeconds(2)))
            .Apply(target.Pid, patch);

        Assert.Equal(ProcessOutcome.Busy, result.Outcome);
        Assert.Contains("compute", result.Message);
        Assert.True(result.Attempts > 1);
        Assert.Equal(original, target.ReadFunction(program, "compute"));
        Assert.Equal(maps, target.Maps);
        Assert.Empty(UserPatcher.List(target.Pid));
        Assert.True(target.Alive);
    }

    [Fact]
    public void A_failure_after_the_region_is_mapped_unmaps_it_and_restores_every_byte()
    {
        var (program, patch) = _programs.LoopProgramAndPatch();
        // A 32-bit reference to a libc function: libc is mapped far beyond 2 GiB of a PIE executable, so
        // relocating fails once the region is mapped, in the middle of the install.
        var unreachable = patch with
        {
            Relocations = [.. patch.Relocations,
                new PatchRelocation(0, RelocationKind.Relative32, RelocationBase.Import, 0, "getpid", 0)],
        };
        using var target = new RunningTarget(program, "4");
        var original = target.ReadFunction(program, "compute");
        var maps = target.Maps;

        var result = new UserPatcher().Apply(target.Pid, unreachable);

        Assert.Equal(ProcessOutcome.Failed, result.Outcome);
        Assert.Contains("out of reach", result.Message);
        Assert.Equal(original, target.ReadFunction(program, "compute"));
        Assert.Equal(maps, target.Maps);
        Assert.True(target.Alive);
    }

    [Fact]
    public void A_patch_already_applied_is_recognised_from_the_process_memory()
    {
        var (program, patch) = _programs.LoopProgramAndPatch();
        using var target = new RunningTarget(program, "2");
        var patcher = new UserPatcher();
        Assert.Equal(ProcessOutcome.Applied, patcher.Apply(target.Pid, patch).Outcome);

        var again = patcher.Apply(target.Pid, patch);

        Assert.Equal(ProcessOutcome.AlreadyApplied, again.Outcome);
        Assert.Single(UserPatcher.List(target.Pid));
        Assert.Equal([target.Pid], UserPatcher.ProcessesMapping(patch.Target.BuildId));
    }

    [Fact]
    public void A_process_that_does_not_map_the_target_is_left_alone()
    {
        var (_, patch) = _programs.LoopProgramAndPatch();
        var otherBuild = _programs.Gcc("loop-other", "-O1", "-pthread", _programs.Source("loop.c"));
        using var other = new RunningTarget(otherBuild, "1");

        var result = new UserPatcher().Apply(other.Pid, patch);

        Assert.Equal(ProcessOutcome.NotTarget, result.Outcome);
    }

    internal static void WaitUntil(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"timed out waiting until {what}");
            Thread.Sleep(0);
        }
    }
}
