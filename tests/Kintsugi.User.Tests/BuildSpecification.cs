using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>Building a patch from a source fix: diffed, proven against the shipped object, and applied to a running
/// process.</summary>
public sealed class BuildSpecification : IDisposable
{
    private static readonly string[] Flags = ["-O2", "-g", "-pthread"];
    private const string OldBody = "__atomic_fetch_add(&old_calls, 1, __ATOMIC_RELAXED);\n    return x * 2 + 1;";
    private const string NewBody = "__atomic_fetch_add(&new_calls, 1, __ATOMIC_RELAXED);\n    return x * 2 + 3;";
    private readonly CompiledPrograms _programs = new();

    public void Dispose() => _programs.Dispose();

    /// <summary>A source tree holding loop.c, the shipped program built from it, and a fix made by editing
    /// it.</summary>
    private (string Tree, string Program, string Fix) ShippedTreeAndFix(string replace, string with,
        params string[] shippedFlags)
    {
        var tree = Path.Combine(_programs.Directory, "src");
        Directory.CreateDirectory(tree);
        var source = File.ReadAllText(_programs.Source("loop.c"));
        File.WriteAllText(Path.Combine(tree, "loop.c"), source);
        var program = _programs.Gcc("shipped",
            [.. (shippedFlags.Length > 0 ? shippedFlags : Flags), Path.Combine(tree, "loop.c")]);
        Assert.Contains(replace, source);
        var fixedTree = Path.Combine(_programs.Directory, "fixed");
        Directory.CreateDirectory(fixedTree);
        File.WriteAllText(Path.Combine(fixedTree, "loop.c"), source.Replace(replace, with));
        var diff = ExternalCommand.RunAsync("diff", ["-u", "src/loop.c", "fixed/loop.c"], _programs.Directory)
            .GetAwaiter().GetResult();
        var fix = Path.Combine(_programs.Directory, "fix.patch");
        File.WriteAllText(fix, diff.StandardOutput);
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
        ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "old_calls") > calls + 1_000_000_000L,
            "the fixed code runs");
        Assert.True(target.Alive, target.Output);
    }

    [Fact]
    public async Task A_fix_to_two_units_with_its_regression_test_becomes_one_patch()
    {
        const string Main = """
            #include <pthread.h>
            #include <stdio.h>
            #include <unistd.h>
            long fixed_a, fixed_b;
            long compute_b(long x);
            __attribute__((noinline)) long compute_a(long x) { return x + 1; }
            static void *worker(void *arg)
            {
                (void)arg;
                for (long i = 1;; i++) {
                    if (compute_a(i) == i + 2) __atomic_fetch_add(&fixed_a, 1, __ATOMIC_RELAXED);
                    if (compute_b(i) == i + 20) __atomic_fetch_add(&fixed_b, 1, __ATOMIC_RELAXED);
                    if (i % 1000 == 0) usleep(1000);
                }
                return NULL;
            }
            int main(void)
            {
                pthread_t t;
                pthread_create(&t, NULL, worker, NULL);
                printf("ready\n");
                fflush(stdout);
                for (;;) pause();
            }
            """;
        const string Library = "__attribute__((noinline)) long compute_b(long x) { return x + 10; }\n";
        var tree = Path.Combine(_programs.Directory, "two");
        var fixedTree = Path.Combine(_programs.Directory, "two-fixed");
        Directory.CreateDirectory(tree);
        Directory.CreateDirectory(Path.Combine(fixedTree, "tests"));
        File.WriteAllText(Path.Combine(tree, "main.c"), Main);
        File.WriteAllText(Path.Combine(tree, "lib.c"), Library);
        File.WriteAllText(Path.Combine(fixedTree, "main.c"), Main.Replace("return x + 1;", "return x + 2;"));
        File.WriteAllText(Path.Combine(fixedTree, "lib.c"), Library.Replace("x + 10", "x + 20"));
        File.WriteAllText(Path.Combine(fixedTree, "tests", "compute.out"), "compute_a(1) = 3\n");
        var program = _programs.Gcc("two-units", [.. Flags, Path.Combine(tree, "main.c"), Path.Combine(tree, "lib.c")]);
        var diff = await ExternalCommand.RunAsync("diff", ["-ruN", "two", "two-fixed"], _programs.Directory);
        var fix = Path.Combine(_programs.Directory, "two.patch");
        File.WriteAllText(fix, diff.StandardOutput);
        Assert.Contains("tests/compute.out", diff.StandardOutput);

        var result =
            await new UserPatchBuilder().BuildAsync(new UserBuildRequest(program, tree, fix, Flags, "two-units",
            Path.Combine(_programs.Directory, "two.kup.json")));

        Assert.Equal(["compute_a", "compute_b"], result.Functions.Order());
        using var target = new RunningTarget(program, "");
        var applied = new UserPatcher().Apply(target.Pid, UserPatch.Load(result.OutputPath));
        Assert.True(applied.Outcome == ProcessOutcome.Applied, applied.Message);
        ApplyRevertSpecification.WaitUntil(() =>
            target.ReadGlobal(program, "fixed_a") > 1000 && target.ReadGlobal(program, "fixed_b") > 1000,
            "both fixed functions run");
    }

    [Fact]
    public async Task A_fix_that_changes_initialised_data_is_refused_with_the_data_layout_rule()
    {
        var (tree, program, fix) = ShippedTreeAndFix("sleep_inside_every = 50000;", "sleep_inside_every = 40000;");

        var refusal = await Assert.ThrowsAsync<UserBuildException>(() =>
            new UserPatchBuilder().BuildAsync(Request(tree, program, fix)));

        Assert.Contains("rule: data layout", refusal.Message);
        Assert.Contains("sleep_inside_every", refusal.Message);
    }

    [Fact]
    public async Task A_source_compiled_with_other_flags_than_the_shipped_object_fails_the_fidelity_proof()
    {
        var (tree, program, fix) = ShippedTreeAndFix(OldBody, NewBody, "-O1", "-g", "-pthread");

        var refusal = await Assert.ThrowsAsync<UserBuildException>(() =>
            new UserPatchBuilder().BuildAsync(Request(tree, program, fix)));

        Assert.Contains("rule: fidelity", refusal.Message);
    }

    [Fact]
    public async Task A_fix_that_changes_only_a_comment_builds_nothing()
    {
        var (tree, program, fix) =
            ShippedTreeAndFix("/* \"stuck\": never returns */", "/* \"stuck\": this call never returns */");

        var refusal = await Assert.ThrowsAsync<UserBuildException>(() =>
            new UserPatchBuilder().BuildAsync(Request(tree, program, fix)));

        Assert.Equal(ExitCode.NothingToDo, refusal.ExitCode);
    }
}
