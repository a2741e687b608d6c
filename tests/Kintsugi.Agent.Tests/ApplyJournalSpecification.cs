using Kintsugi.Kernel;

namespace Kintsugi.Agent.Tests;

/// <summary>
/// The apply journal is the store's own records: what recovery makes of what an interrupted apply left
/// (a plain directory tree; the kernel side is proven in the lab).
/// </summary>
public sealed class ApplyJournalSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private static readonly KernelRelease Release = KernelRelease.Parse("6.1.0-56-cloud-amd64");

    public void Dispose() => _dir.Dispose();

    private PatchStore Store =>
        new(new MachinePaths(_dir["state"], _dir["etc"], _dir["run"], _dir["systemd"]), Release);

    private void Record(string name, long sequence, BootState state, params string[] replaces)
    {
        Directory.CreateDirectory(Store.Directory);
        File.WriteAllBytes(Store.ModulePath(ModuleName.Parse(name)), [1, 2, 3]);
        Store.Save(new InstalledPatch(name, "00", sequence, DateTimeOffset.UnixEpoch, state, Replaces: replaces));
    }

    private IEnumerable<string> Names => Store.List().Select(r => r.Name);

    [Fact]
    public void A_staged_patch_never_started_loading_and_is_discarded()
    {
        Record("level_1", 1, BootState.Healthy);
        Record("level_2", 2, BootState.Staged, "level_1");
        var changes = Store.RecoverInterruptedApply();
        Assert.Equal(["level_1"], Names);
        Assert.Contains("interrupted before the load", Assert.Single(changes));
        Assert.False(File.Exists(Store.ModulePath(ModuleName.Parse("level_2"))));
    }

    [Fact]
    public void A_confirmed_patch_finishes_its_commit_by_removing_what_it_replaces()
    {
        Record("level_1", 1, BootState.Healthy);
        Record("level_2", 2, BootState.Healthy, "level_1");
        Store.RecoverInterruptedApply();
        Assert.Equal(["level_2"], Names);
    }

    [Fact]
    public void A_pending_patch_does_not_yet_replace_anything()
    {
        Record("level_1", 1, BootState.Healthy);
        Record("level_2", 2, BootState.Pending, "level_1");
        Store.RecoverInterruptedApply();
        Assert.Equal(["level_1", "level_2"], Names);
    }

    [Fact]
    public void A_module_name_that_comes_back_in_a_later_level_is_not_removed_by_an_older_replacement()
    {
        // level 2 (patch_b) replaced patch_a; level 3 reuses the name patch_a and replaces patch_b.
        Record("patch_b", 2, BootState.Healthy, "patch_a");
        Record("patch_a", 3, BootState.Healthy, "patch_b");
        Store.RecoverInterruptedApply();
        Assert.Equal(["patch_a"], Names);
    }

    [Fact]
    public void The_last_attempt_is_kept_outside_the_patch_records()
    {
        Record("level_1", 1, BootState.Healthy);
        Store.SaveAttempt(new ApplyAttempt(DateTimeOffset.UnixEpoch, "apply-failed", 2, null, "refused"));
        Assert.Equal(["level_1"], Names);
        Assert.Equal("refused", Store.LastAttempt!.Detail);
    }
}
