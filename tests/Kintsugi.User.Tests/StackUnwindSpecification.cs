using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>The stack check unwinds with .eh_frame (Debian builds without frame pointers) and falls back only when
/// unsure.</summary>
public sealed class StackUnwindSpecification : IDisposable
{
    private readonly CompiledPrograms _programs = new();

    public void Dispose() => _programs.Dispose();

    [Fact]
    public void A_stale_pointer_on_a_live_stack_does_not_hold_up_a_patch_when_the_unwind_is_certain()
    {
        var program =
            _programs.Gcc("stale", "-O2", "-g", "-pthread", "-fomit-frame-pointer", _programs.Source("stale.c"));
        var fix = _programs.Gcc("stale-fixed.o", "-O2", "-pthread", "-DFIXED", "-ffunction-sections", "-fdata-sections",
            "-c", _programs.Source("stale.c"));
        var patch = PatchLinker.Link(program, fix, ["compute"], "stale-compute");
        using var target = new RunningTarget(program, "");
        var compute = ElfImage.Load(program).Symbols(dynamic: false).Single(s => s.Name == "compute");
        var loadBase = LoadBase(target.Pid, program);
        var ranges =
            new[] { new CodeRange(loadBase + compute.Value, loadBase + compute.Value + compute.Size, "compute") };

        using (var memory = new ProcessMemory(target.Pid))
        using (var traced = TracedProcess.Attach(target.Pid, TimeSpan.FromSeconds(2)))
        {
            var maps = ProcessMaps.Read(target.Pid);
            var unwinder = new StackUnwinder(maps, memory);
            // The idle thread: the scan alone takes its stale word for a return address and would wait for ever; its
            // unwind (pause in the C library, the idle function, the thread's start) is certain and finds no frame in
            // compute.
            var idle = traced.Threads.Where(t => StackCheck.ConservativeScan(t, maps, memory, ranges) is not null
                && unwinder.ReturnAddresses(t.Registers) is { Count: >= 2 }).ToList();
            Assert.NotEmpty(idle);
            Assert.All(idle, t => Assert.Null(StackCheck.Busy(t, maps, memory, ranges, unwinder)));
        }

        var applied = new UserPatcher(PatcherOptions.Default with { BusyTimeout = TimeSpan.FromSeconds(2) })
            .Apply(target.Pid, patch);
        Assert.True(applied.Outcome == ProcessOutcome.Applied, applied.Message);
        ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "new_calls") > 1000, "the fixed code runs");
    }

    [Fact]
    public void A_thread_asleep_inside_a_function_is_found_by_unwinding_through_the_C_library()
    {
        var program =
            _programs.Gcc("loop", "-O2", "-g", "-pthread", "-fomit-frame-pointer", _programs.Source("loop.c"));
        using var target = new RunningTarget(program, "2 stuck");
        var compute = ElfImage.Load(program).Symbols(dynamic: false).Single(s => s.Name == "compute");
        var loadBase = LoadBase(target.Pid, program);
        var range = new CodeRange(loadBase + compute.Value, loadBase + compute.Value + compute.Size, "compute");
        Thread.Sleep(100);

        using var memory = new ProcessMemory(target.Pid);
        using var traced = TracedProcess.Attach(target.Pid, TimeSpan.FromSeconds(2));
        var unwinder = new StackUnwinder(ProcessMaps.Read(target.Pid), memory);
        var frames = traced.Threads.Select(t => unwinder.ReturnAddresses(t.Registers)).ToList();
        // The stuck thread sleeps in the C library, called from compute(): its unwind says it returns into compute().
        Assert.Contains(frames, f => f is not null && f.Any(range.Contains));
    }

    private static ulong LoadBase(int pid, string program)
    {
        using var memory = new ProcessMemory(pid);
        var image = ElfImage.Load(program);
        return LoadedObject.Find(ProcessMaps.Read(pid), memory).Single(o => o.BuildId == image.BuildId).LoadBase;
    }
}
