using Kintsugi.Testing;

namespace Kintsugi.Lab.Tests;

/// <summary>The lab uses KVM when this process can use it, and emulation otherwise, unless told.</summary>
public sealed class LabAcceleratorSpecification
{
    [Fact]
    public void Without_a_kvm_device_the_guest_is_emulated_by_single_threaded_tcg()
    {
        var chosen = LabAccelerator.Select("/nonexistent/kvm", null);
        Assert.False(chosen.IsKvm);
        Assert.Equal(["-accel", "tcg,thread=single", "-cpu", "max"], chosen.QemuArguments);
        Assert.Contains("/nonexistent/kvm does not exist", chosen.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_kvm_device_this_process_can_open_read_write_runs_the_guest_on_the_host_cpu()
    {
        using var directory = new TemporaryDirectory();
        // stands in for the device node: what is checked is that it opens read-write
        var device = Path.Combine(directory.Path, "kvm");
        File.WriteAllText(device, "");
        var chosen = LabAccelerator.Select(device, "auto");
        Assert.True(chosen.IsKvm);
        Assert.Equal(["-accel", "kvm", "-cpu", "host"], chosen.QemuArguments);
    }

    [Fact]
    public void Tcg_can_be_forced_even_where_kvm_works()
    {
        using var directory = new TemporaryDirectory();
        var device = Path.Combine(directory.Path, "kvm");
        File.WriteAllText(device, "");
        Assert.False(LabAccelerator.Select(device, "tcg").IsKvm);
    }

    [Fact]
    public void Insisting_on_kvm_where_it_is_unusable_is_an_environment_error()
    {
        var error = Assert.Throws<LabException>(() => LabAccelerator.Select("/nonexistent/kvm", "kvm"));
        Assert.Equal(ExitCode.Environment, error.ExitCode);
        Assert.Contains("/nonexistent/kvm does not exist", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void On_this_machine_the_choice_follows_whether_dev_kvm_is_usable()
    {
        var usable = File.Exists("/dev/kvm") && CanOpen("/dev/kvm");
        Assert.Equal(usable, LabAccelerator.Select(LabAccelerator.KvmDevice, null).IsKvm);
    }

    private static bool CanOpen(string path)
    {
        try { using var s = new FileStream(path, FileMode.Open, FileAccess.ReadWrite); return true; }
        catch (Exception) { return false; }
    }
}
