using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>Patching a function of a shared library in a running process that uses it.</summary>
public sealed class SharedLibrarySpecification : IDisposable
{
    private readonly CompiledPrograms _programs = new();

    public void Dispose() => _programs.Dispose();

    [Fact]
    public void A_library_function_that_calls_through_the_libraries_PLT_is_patched_and_reverted_in_a_running_process()
    {
        var library = _programs.Gcc("libcalc.so", "-O2", "-g", "-fPIC", "-shared", _programs.Source("libcalc.c"));
        var fix = _programs.Gcc("libcalc-fixed.o", "-O2", "-g", "-fPIC", "-DFIXED", "-ffunction-sections",
            "-fdata-sections", "-c", _programs.Source("libcalc.c"));
        var program = _programs.Gcc("calcuser", "-O2", "-g", "-pthread", _programs.Source("calcuser.c"),
            "-L" + _programs.Directory, "-lcalc");
        var patch = PatchLinker.Link(library, fix, ["calc_scale"], "libcalc-scale-fix");
        using var target = new RunningTarget(program, "4", libraryPath: _programs.Directory);
        var patcher = new UserPatcher();
        var original = target.ReadFunction(library, "calc_scale");

        for (var cycle = 0; cycle < 50; cycle++)
        {
            var applied = patcher.Apply(target.Pid, patch);
            Assert.True(applied.Outcome == ProcessOutcome.Applied, $"cycle {cycle}: {applied.Message}");
            var oldCalls = target.ReadGlobal(library, "calc_old_calls");
            var newCalls = target.ReadGlobal(library, "calc_new_calls");
            ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(library, "calc_new_calls") > newCalls,
                "the new code runs");
            Assert.Equal(oldCalls, target.ReadGlobal(library, "calc_old_calls"));

            var reverted = patcher.Revert(target.Pid);
            Assert.True(reverted.Outcome == ProcessOutcome.Reverted, $"cycle {cycle}: {reverted.Message}");
            newCalls = target.ReadGlobal(library, "calc_new_calls");
            ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(library, "calc_old_calls") > oldCalls,
                "the old code runs");
            Assert.Equal(newCalls, target.ReadGlobal(library, "calc_new_calls"));
        }

        Assert.True(target.Alive, target.Output);
        Assert.Equal(original, target.ReadFunction(library, "calc_scale"));
    }
}
