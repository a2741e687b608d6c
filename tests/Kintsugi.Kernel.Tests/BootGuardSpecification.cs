using Kintsugi.Kernel;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Tests;

/// <summary>
/// The boot-time crash-loop guard on this host (no module is loaded here: a patch that reaches the load step fails
/// cleanly, which is not a crash): when a patch found pending from an earlier boot is quarantined, and that an
/// operator can take it out of quarantine.
/// </summary>
public sealed class BootGuardSpecification : IDisposable
{
    private readonly TemporaryDirectory _root = new();

    public void Dispose() => _root.Dispose();

    private MachinePaths Paths => new(_root["state"], _root["etc"], _root["run"], _root["systemd"]);

    private PatchStore Store => new(Paths, RunningKernel.Release);

    private const string Name = "kintsugi_guard_test";

    /// <summary>A patch left pending by an earlier boot (a crash, a reset or a power loss during the settle
    /// period).</summary>
    private void PendingFromAnEarlierBoot(bool confirmedBefore, int unconfirmedBoots = 0)
    {
        Directory.CreateDirectory(Store.Directory);
        File.WriteAllBytes(Store.ModulePath(ModuleName.Parse(Name)), [0x7f, 0x45, 0x4c, 0x46]);
        Store.Save(new InstalledPatch(Name, new string('a', 64), 1, DateTimeOffset.UtcNow.AddDays(-30),
            BootState.Pending,
            LastLoadAt: DateTimeOffset.UtcNow.AddMinutes(-5), BootId: "an-earlier-boot",
            UnconfirmedBoots: unconfirmedBoots, ConfirmedBefore: confirmedBefore));
    }

    private BootResult Boot()
    {
        Directory.CreateDirectory(Paths.Runtime);
        File.Delete(BootApplier.DoneMarker(Paths));
        return new BootApplier(Paths, new LivepatchRuntime(_ => { }), _ => { })
            .Run(TimeSpan.Zero, TimeSpan.FromSeconds(5));
    }

    private InstalledPatch Record => Store.Find(ModuleName.Parse(Name))!;

    [Fact]
    public void A_patch_that_ran_healthy_before_is_not_quarantined_by_one_boot_ending_during_its_settle()
    {
        PendingFromAnEarlierBoot(confirmedBefore: true);
        var result = Boot();
        Assert.DoesNotContain(result.Actions, a => a.Action == "quarantined");
        Assert.Contains(result.Actions, a => a.Action == "unconfirmed");
        Assert.NotEqual(BootState.Quarantined, Record.BootState);
        Assert.Equal(1, Record.UnconfirmedBoots);
    }

    [Fact]
    public void Boots_ending_again_and_again_before_confirmation_quarantine_even_a_patch_that_ran_healthy_before()
    {
        PendingFromAnEarlierBoot(confirmedBefore: true,
            unconfirmedBoots: InstalledPatch.UnconfirmedBootsBeforeQuarantine - 1);
        Assert.Contains(Boot().Actions, a => a.Action == "quarantined");
        Assert.Equal(BootState.Quarantined, Record.BootState);
        Assert.Contains("boots in a row", Record.Note);
    }

    [Fact]
    public void A_patch_never_confirmed_is_quarantined_by_the_first_boot_that_ends_before_its_confirmation()
    {
        PendingFromAnEarlierBoot(confirmedBefore: false);
        Assert.Contains(Boot().Actions, a => a.Action == "quarantined");
        Assert.Equal(BootState.Quarantined, Record.BootState);
    }

    [Fact]
    public void An_operator_can_take_a_patch_out_of_quarantine_and_it_is_tried_again_at_the_next_boot()
    {
        PendingFromAnEarlierBoot(confirmedBefore: false);
        Boot();
        Assert.Equal(BootState.Quarantined, Record.BootState);

        var retried = Store.Retry(ModuleName.Parse(Name))!;

        Assert.Equal(BootState.Installed, retried.BootState);
        Assert.Contains("retried by an operator", retried.Note);
        // The next boot tries to load it (this host cannot: a clean failure, not a quarantine).
        Assert.Contains(Boot().Actions, a => a.Patch == Name && a.Action == "failed");
        Assert.Null(Store.Retry(ModuleName.Parse("kintsugi_not_installed")));
    }
}
