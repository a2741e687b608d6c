using Kintsugi.Kernel;

namespace Kintsugi.Core.Tests;

/// <summary>The on-disk store of installed patches (a plain directory tree: no kernel involved).</summary>
public sealed class PatchStoreSpecification : IDisposable
{
    private readonly TemporaryDirectory _root = new();
    private MachinePaths Paths => new(_root["state"], _root["etc"], _root["run"], _root["systemd"]);
    private static readonly KernelRelease Release = KernelRelease.Parse("6.1.0-56-cloud-amd64");

    public void Dispose() => _root.Dispose();

    private void Record(string name, long sequence, BootState state)
    {
        var store = new PatchStore(Paths, Release);
        Directory.CreateDirectory(store.Directory);
        File.WriteAllBytes(store.ModulePath(ModuleName.Parse(name)), [1, 2, 3]);
        store.Save(new InstalledPatch(name, "00", sequence, DateTimeOffset.UnixEpoch, state));
    }

    [Fact]
    public void Installed_patches_are_listed_in_installation_order()
    {
        Record("level_2", 2, BootState.Healthy);
        Record("level_1", 1, BootState.Installed);
        Assert.Equal(["level_1", "level_2"], new PatchStore(Paths, Release).List().Select(p => p.Name));
    }

    [Fact]
    public void A_module_copied_without_its_record_is_never_listed()
    {
        // What a crash between copying the module and writing its record leaves behind.
        var store = new PatchStore(Paths, Release);
        Directory.CreateDirectory(store.Directory);
        File.WriteAllBytes(store.ModulePath(ModuleName.Parse("half_installed")), [1]);
        Assert.Empty(store.List());
    }

    [Fact]
    public void A_saved_state_survives_reading_back()
    {
        Record("level_1", 1, BootState.Pending);
        Assert.Equal(BootState.Pending, new PatchStore(Paths, Release).Find(ModuleName.Parse("level_1"))!.BootState);
    }

    [Fact]
    public void A_corrupt_record_is_reported_with_what_to_do()
    {
        var store = new PatchStore(Paths, Release);
        Record("level_1", 1, BootState.Healthy);
        File.WriteAllText(Path.Combine(store.Directory, "level_1.json"), "{ not json");
        var error = Assert.Throws<LivepatchException>(() => store.List());
        Assert.Contains("install the patch again", error.Message);
    }

    [Fact]
    public void The_boot_unit_runs_the_boot_command_and_honours_the_kill_switch()
    {
        SystemdUnit.Install(Paths, "/usr/bin/kintsugi");
        var unit = File.ReadAllText(Path.Combine(Paths.SystemdUnits, SystemdUnit.Name));
        Assert.Contains("ExecStart=\"/usr/bin/kintsugi\" kernel boot", unit);
        Assert.Contains("ConditionKernelCommandLine=!kintsugi.enable=0", unit);
        Assert.Equal(Path.Combine(Paths.SystemdUnits, SystemdUnit.Name),
            new FileInfo(Path.Combine(Paths.SystemdUnits, "multi-user.target.wants", SystemdUnit.Name)).LinkTarget);
    }
}
