using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>Building a patch from a source fix: diffed, proven against the shipped object, and applied to a running process.</summary>
public sealed class BuildSpecification : IDisposable
{
    private static readonly string[] Flags = ["-O2", "-g", "-pthread"];
    private const string OldBody = "__atomic_fetch_add(&old_calls, 1, __ATOMIC_RELAXED);\n    return x * 2 + 1;";
    private const string NewBody = "__atomic_fetch_add(&new_calls, 1, __ATOMIC_RELAXED);\n    return x * 2 + 3;";
    private readonly CompiledPrograms _programs = new();

    public void Dispose() => _programs.Dispose();

    /// <summary>A source tree holding loop.c, the shipped program built from it, and a fix made by editing it.</summary>
    private (string Tree, string Program, string Fix) ShippedTreeAndFix(string replace, string with, params string[] shippedFlags)
    {
        var tree = Path.Combine(_programs.Directory, "src");
        Directory.CreateDirectory(tree);
        var source = File.ReadAllText(_programs.Source("loop.c"));
        File.WriteAllText(Path.Combine(tree, "loop.c"), source);
        var program = _programs.Gcc("shipped", [.. (shippedFlags.Length > 0 ? shippedFlags : Flags), Path.Combine(tree, "loop.c")]);
        Assert.Contains(replace, source);
        var fixedTree = Path.Combine(_programs.Directory, "fixed");
        Directory.CreateDirectory(fixedTree);
        File.WriteAllText(Path.Combine(fixedTree, "loop.c"), source.Replace(replace, with));
        var diff = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("diff", ["-u", "src/loop.c", "fixed/loop.c"])
        { RedirectStandardOutput = true, WorkingDirectory = _programs.Directory })!;
        var fix = Path.Combine(_programs.Directory, "fix.patch");
        File.WriteAllText(fix, diff.StandardOutput.ReadToEnd());
        diff.WaitForExit();
        return (tree, program, fix);
    }

    private UserBuildRequest Request(string tree, string program, string fix) =>
        new(program, tree, fix, Flags, "loop-fix", Path.Combine(_programs.Directory, "loop-fix.kup.json"));

    [Fact]
    public async Task A_fix_to_one_function_becomes_a_patch_that_changes_the_running_program()
    {
        var (tree, program, fix) = ShippedTreeAndFix(OldBody, NewBody);

        var result = await new UserPatchBuilder().BuildAsync(Request(tree, program, fix));

        Assert.Equal(["compute"], result.Functions);
        var patch = UserPatch.Load(result.OutputPath);
        using var target = new RunningTarget(program, "4");
        var applied = new UserPatcher().Apply(target.Pid, patch);
        Assert.True(applied.Outcome == ProcessOutcome.Applied, applied.Message);
        var oldCalls = target.ReadGlobal(program, "old_calls");
        ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "new_calls") > 1000, "the fixed code runs");
        Assert.Equal(oldCalls, target.ReadGlobal(program, "old_calls"));
        Assert.True(target.Alive, target.Output);
    }

    [Fact]
    public async Task A_function_of_a_stripped_object_is_found_by_its_compiled_code_and_patched()
    {
        // The fix touches only what compute() already uses: a stripped object names neither it nor its variables.
        var (tree, program, fix) = ShippedTreeAndFix("__atomic_fetch_add(&old_calls, 1, __ATOMIC_RELAXED);",
            "__atomic_fetch_add(&old_calls, 1000000, __ATOMIC_RELAXED);");
        // The stripped copy names no function of its own; its code and build-id are the shipped program's.
        var stripped = _programs.Path_("shipped-stripped");
        File.Copy(program, stripped);
        Assert.True(ExternalCommand.Run("strip", stripped).Succeeded);
        Assert.DoesNotContain(ElfImage.Load(stripped).Symbols(dynamic: false), s => s.Name == "compute");

        var result = await new UserPatchBuilder().BuildAsync(Request(tree, stripped, fix));

        var patch = UserPatch.Load(result.OutputPath);
        var compute = ElfImage.Load(program).Symbols(dynamic: false).Single(s => s.Name == "compute");
        Assert.Equal(compute.Value, patch.Functions.Single().Address);
        using var target = new RunningTarget(program, "4");
        var applied = new UserPatcher().Apply(target.Pid, patch);
        Assert.True(applied.Outcome == ProcessOutcome.Applied, applied.Message);
        // The program's own counter (found through the shipped code, not a copy in the patch) counts a million a call.
        var calls = target.ReadGlobal(program, "old_calls");
        ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "old_calls") > calls + 1_000_000_000L, "the fixed code runs");
        Assert.True(target.Alive, target.Output);
    }

    [Fact]
    public async Task A_fix_that_changes_initialised_data_is_refused_with_the_data_layout_rule()
    {
        var (tree, program, fix) = ShippedTreeAndFix("sleep_inside_every = 50000;", "sleep_inside_every = 40000;");

        var refusal = await Assert.ThrowsAsync<UserBuildException>(() => new UserPatchBuilder().BuildAsync(Request(tree, program, fix)));

        Assert.Contains("rule: data layout", refusal.Message);
        Assert.Contains("sleep_inside_every", refusal.Message);
    }

    [Fact]
    public async Task A_source_compiled_with_other_flags_than_the_shipped_object_fails_the_fidelity_proof()
    {
        var (tree, program, fix) = ShippedTreeAndFix(OldBody, NewBody, "-O1", "-g", "-pthread");

        var refusal = await Assert.ThrowsAsync<UserBuildException>(() => new UserPatchBuilder().BuildAsync(Request(tree, program, fix)));

        Assert.Contains("rule: fidelity", refusal.Message);
    }

    [Fact]
    public async Task A_fix_that_changes_only_a_comment_builds_nothing()
    {
        var (tree, program, fix) = ShippedTreeAndFix("/* \"stuck\": never returns */", "/* \"stuck\": this call never returns */");

        var refusal = await Assert.ThrowsAsync<UserBuildException>(() => new UserPatchBuilder().BuildAsync(Request(tree, program, fix)));

        Assert.Equal(ExitCode.NothingToDo, refusal.ExitCode);
    }
}
