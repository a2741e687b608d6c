using System.Text.Json;
using Kintsugi.Lab;
using Kintsugi.Testing;
using static Kintsugi.Testing.GuestOutput;

namespace Kintsugi.Kernel.Tests;

/// <summary>
/// The livepatch runtime, proven in a real Debian kernel booted in the lab: the real kintsugi binary runs
/// inside the guest against the kernel's own /sys/kernel/livepatch. Each kernel line runs the same
/// specification (see the derived classes at the end of this file).
/// </summary>
public abstract class LivepatchRuntimeSpecification(KernelRelease release)
{
    private const string OriginalCmdline = "console=ttyS0";
    private const string MarkerA = "kintsugi-fixture-a: live patched";
    private const string MarkerB = "kintsugi-fixture-b: cumulative replacement";

    private Task<KernelUnderTest> Kernel => KernelUnderTest.GetAsync(release);

    /// <summary>Asserts the status a guest command reported with <c>echo "@label=$?"</c>.</summary>
    private static void AssertReturnCode(ExitCode expected, string output, string label)
    {
        var code = (ExitCode)ReturnCode(output, label);
        Assert.True(code == expected, $"@{label} reported {code}, expected {expected}:\n{output}");
    }

    [Fact]
    public async Task Load_changes_the_patched_behaviour_and_unload_restores_it()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            echo @before; cat /proc/cmdline
            kintsugi kernel load /fixtures/kintsugi_fixture_cmdline_a.ko || exit 10
            echo @patched; cat /proc/cmdline
            echo @list; kintsugi kernel list --json
            echo @unload; kintsugi kernel unload kintsugi_fixture_cmdline_a || exit 11
            echo @after; cat /proc/cmdline
            echo @modules; cat /proc/modules | cut -d' ' -f1
            """);
        Succeeded(result);
        Assert.StartsWith(OriginalCmdline, Section(result.Output, "before"));
        Assert.Equal(MarkerA, Section(result.Output, "patched"));
        Assert.StartsWith(OriginalCmdline, Section(result.Output, "after"));
        Assert.DoesNotContain("kintsugi_fixture_cmdline_a", Section(result.Output, "modules"));

        using var list = JsonDocument.Parse(Section(result.Output, "list"));
        var patch = Assert.Single(list.RootElement.EnumerateArray());
        Assert.Equal("kintsugi_fixture_cmdline_a", patch.GetProperty("name").GetString());
        Assert.True(patch.GetProperty("enabled").GetBoolean());
        Assert.False(patch.GetProperty("inTransition").GetBoolean());
        var patchedObject = Assert.Single(patch.GetProperty("objects").EnumerateArray());
        Assert.Equal("vmlinux", patchedObject.GetProperty("name").GetString());
        Assert.Equal("cmdline_proc_show",
            Assert.Single(patchedObject.GetProperty("functions").EnumerateArray()).GetProperty("name").GetString());
    }

    [Fact]
    public async Task A_cumulative_replacement_leaves_only_the_new_patch_loaded()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            kintsugi kernel load /fixtures/kintsugi_fixture_cmdline_a.ko || exit 10
            kintsugi kernel load /fixtures/kintsugi_fixture_cmdline_b.ko || exit 11
            echo @cmdline; cat /proc/cmdline
            echo @livepatches; ls /sys/kernel/livepatch
            echo @modules; cat /proc/modules | cut -d' ' -f1
            echo @status; kintsugi status --json
            echo @info; kintsugi kernel info kintsugi_fixture_cmdline_b --json
            """);
        Succeeded(result);
        Assert.Equal(MarkerB, Section(result.Output, "cmdline"));
        using var info = JsonDocument.Parse(Section(result.Output, "info"));
        Assert.True(info.RootElement.GetProperty("livepatch").GetBoolean());
        Assert.True(info.RootElement.GetProperty("loaded").GetBoolean());
        Assert.StartsWith(release.Value + " SMP ", info.RootElement.GetProperty("vermagic").GetString());
        Assert.Equal("99.0.0-kintsugi-fixture",
            info.RootElement.GetProperty("modInfo").GetProperty("kintsugi_effective_version").GetString());
        Assert.Equal("kintsugi_fixture_cmdline_b", Section(result.Output, "livepatches"));
        var modules = Section(result.Output, "modules").Split('\n');
        Assert.Contains("kintsugi_fixture_cmdline_b", modules);
        Assert.DoesNotContain("kintsugi_fixture_cmdline_a", modules);

        using var status = JsonDocument.Parse(Section(result.Output, "status"));
        Assert.Equal("applied", status.RootElement.GetProperty("state").GetString());
        Assert.Contains("99.0.0-kintsugi-fixture", status.RootElement.GetProperty("effectiveVersion").GetString());
        Assert.Equal("kintsugi_fixture_cmdline_b",
            Assert.Single(status.RootElement.GetProperty("patches").EnumerateArray()).GetProperty("name").GetString());
    }

    [Fact]
    public async Task A_stalled_transition_is_reported_with_the_blocking_task_and_reverted()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            insmod /fixtures/kintsugi_fixture_stall_target.ko || exit 10
            kintsugi --verbose kernel load --timeout 3 /fixtures/kintsugi_fixture_stall_patch.ko; echo "@rc=$?"
            echo @after
            echo @livepatches; ls /sys/kernel/livepatch
            echo @modules; cat /proc/modules | cut -d' ' -f1
            echo @end
            """);
        Succeeded(result);
        AssertReturnCode(ExitCode.TransitionFailed, result.Output, "rc");
        Assert.Contains("did not complete within 3 s", result.Output);
        Assert.Contains("(kintsugi-stall)", result.Output);
        Assert.Contains("kintsugi_fixture_stall_loop", result.Output);
        Assert.Contains("reversed and the module removed", result.Output);
        Assert.Equal("", Section(result.Output, "livepatches"));
        Assert.DoesNotContain("kintsugi_fixture_stall_patch", Section(result.Output, "modules").Split('\n'));
    }

    [Fact]
    public async Task Force_completes_a_stalled_transition_with_a_warning()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            insmod /fixtures/kintsugi_fixture_stall_target.ko || exit 10
            kintsugi --verbose kernel load --timeout 3 --force /fixtures/kintsugi_fixture_stall_patch.ko; echo "@load=$?"
            echo @enabled; cat /sys/kernel/livepatch/kintsugi_fixture_stall_patch/enabled
            echo @transition; cat /sys/kernel/livepatch/kintsugi_fixture_stall_patch/transition
            echo @end
            """);
        Succeeded(result);
        AssertReturnCode(ExitCode.Success, result.Output, "load");
        Assert.Contains("warning: forcing the transition", result.Output);
        Assert.Equal("1", Section(result.Output, "enabled"));
        Assert.Equal("0", Section(result.Output, "transition"));
    }

    [Fact]
    public async Task A_module_that_is_not_a_livepatch_is_refused_and_not_loaded()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            kintsugi kernel load /fixtures/kintsugi_fixture_plain.ko; echo "@rc=$?"
            echo @after
            echo @modules; cat /proc/modules | cut -d' ' -f1
            echo @end
            """);
        Succeeded(result);
        AssertReturnCode(ExitCode.InputRefused, result.Output, "rc");
        Assert.Contains("not a livepatch", result.Output);
        Assert.DoesNotContain("kintsugi_fixture_plain", Section(result.Output, "modules").Split('\n'));
    }

    [Fact]
    public async Task A_file_that_is_not_a_module_is_refused()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            echo 'not a module' > /tmp/text.ko
            kintsugi kernel load /tmp/text.ko; echo "@text=$?"
            kintsugi kernel load /bin/busybox; echo "@elf=$?"
            echo @livepatches; ls /sys/kernel/livepatch
            echo @end
            """);
        Succeeded(result);
        AssertReturnCode(ExitCode.InputRefused, result.Output, "text");
        AssertReturnCode(ExitCode.InputRefused, result.Output, "elf");
        Assert.Contains("/tmp/text.ko is not a kernel module: it is not an ELF file", result.Output);
        Assert.Contains("/bin/busybox is not a kernel module", result.Output);
        Assert.Equal("", Section(result.Output, "livepatches"));
    }

    [Fact]
    public async Task A_livepatch_built_for_another_kernel_is_refused_and_not_loaded()
    {
        var other = await KernelUnderTest.GetAsync(release == TestKernels.Debian12Cloud61 ? TestKernels.Debian12Cloud612
            : TestKernels.Debian12Cloud61);
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            kintsugi kernel load /fixtures/foreign.ko; echo "@rc=$?"
            echo @livepatches; ls /sys/kernel/livepatch
            echo @end
            """, [new GuestFile(other.Modules["kintsugi_fixture_cmdline_a"], "/fixtures/foreign.ko")]);
        Succeeded(result);
        AssertReturnCode(ExitCode.InputRefused, result.Output, "rc");
        Assert.Contains($"was built for kernel {other.Release}, but this machine runs {release}", result.Output);
        Assert.Equal("", Section(result.Output, "livepatches"));
    }

    [Fact]
    public async Task Status_reports_the_running_build_id_that_the_archive_read_from_the_image()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("echo @status; kintsugi status --json");
        Succeeded(result);
        using var status = JsonDocument.Parse(Section(result.Output, "status"));
        Assert.Equal(kernel.Kernel.Target.BuildId.ToString(), status.RootElement.GetProperty("buildId").GetString());
        Assert.Equal(release.Value, status.RootElement.GetProperty("release").GetString());
        Assert.Equal("nothing-to-apply", status.RootElement.GetProperty("state").GetString());
        Assert.Contains(kernel.Kernel.Target.PackageVersion!,
            status.RootElement.GetProperty("kernelVersion").GetString());
    }

    [Fact]
    public async Task An_installed_patch_is_reapplied_at_the_next_boot()
    {
        using var disk = new TemporaryDisk();
        var second =
            await RebootAfterInstallingAsync(disk, "kintsugi kernel install /fixtures/kintsugi_fixture_cmdline_a.ko");
        Assert.Equal(MarkerA, Section(second.Output, "cmdline"));
        using var status = JsonDocument.Parse(Section(second.Output, "status"));
        var patch = Assert.Single(status.RootElement.GetProperty("patches").EnumerateArray());
        Assert.Equal("healthy", patch.GetProperty("bootState").GetString());
    }

    [Fact]
    public async Task Uninstall_forgets_the_patch_and_removes_the_boot_unit()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync($"""
            kintsugi kernel install --no-load /fixtures/kintsugi_fixture_cmdline_a.ko || exit 10
            echo @installed; ls /var/lib/kintsugi/{release}
            echo @uninstalling; kintsugi kernel uninstall kintsugi_fixture_cmdline_a; echo "@uninstall=$?"
            echo @remaining; ls /var/lib/kintsugi/{release}
            echo @units; ls /etc/systemd/system /etc/systemd/system/multi-user.target.wants
            kintsugi kernel uninstall kintsugi_fixture_cmdline_a; echo "@again=$?"
            echo @end
            """);
        Succeeded(result);
        Assert.Equal(["kintsugi_fixture_cmdline_a.json", "kintsugi_fixture_cmdline_a.ko"],
            Section(result.Output, "installed").Split('\n'));
        AssertReturnCode(ExitCode.Success, result.Output, "uninstall");
        Assert.Equal("", Section(result.Output, "remaining"));
        Assert.DoesNotContain(Kintsugi.Kernel.SystemdUnit.Name, Section(result.Output, "units"));
        AssertReturnCode(ExitCode.NotFound, result.Output, "again");
    }

    [Fact]
    public async Task The_kill_switch_on_the_kernel_command_line_prevents_reapplication()
    {
        using var disk = new TemporaryDisk();
        var second = await RebootAfterInstallingAsync(disk,
            "kintsugi kernel install /fixtures/kintsugi_fixture_cmdline_a.ko", kernelArguments: ["kintsugi.enable=0"]);
        Assert.StartsWith(OriginalCmdline, Section(second.Output, "cmdline"));
        AssertReturnCode(ExitCode.Disabled, second.Output, "service-status");
        using var status = JsonDocument.Parse(Section(second.Output, "status"));
        Assert.Equal("disabled", status.RootElement.GetProperty("state").GetString());
        Assert.False(Assert.Single(status.RootElement.GetProperty("patches").EnumerateArray()).GetProperty("loaded")
            .GetBoolean());
    }

    [Fact]
    public async Task The_kill_switch_file_prevents_boot_time_application()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            kintsugi kernel install --no-load /fixtures/kintsugi_fixture_cmdline_a.ko || exit 10
            mkdir -p /etc/kintsugi && touch /etc/kintsugi/disabled
            kintsugi kernel boot --settle 0; echo "@boot=$?"
            echo @livepatches; ls /sys/kernel/livepatch
            echo @status; kintsugi status --json
            """);
        Succeeded(result);
        AssertReturnCode(ExitCode.Disabled, result.Output, "boot");
        Assert.Equal("", Section(result.Output, "livepatches"));
        using var status = JsonDocument.Parse(Section(result.Output, "status"));
        Assert.Equal("disabled", status.RootElement.GetProperty("state").GetString());
        Assert.Equal("/etc/kintsugi/disabled exists", status.RootElement.GetProperty("disabledBecause").GetString());
    }

    [Fact]
    public async Task A_crash_before_the_patch_is_confirmed_healthy_quarantines_it()
    {
        var kernel = await Kernel;
        using var disk = new TemporaryDisk();
        Succeeded(await kernel.RunAsync("kintsugi kernel install --no-load /fixtures/kintsugi_fixture_cmdline_a.ko",
            disk: disk.Path));
        // The boot service loads the patch and waits 10 s before confirming it; crash the kernel inside that window.
        var crashed = await kernel.RunAsync("""
            until grep -q kintsugi-fixture-a /proc/cmdline; do sleep 0.2; done
            cat /proc/cmdline; sync
            echo c > /proc/sysrq-trigger
            """, [], disk.Path);
        Assert.Null(crashed.ExitCode);
        Assert.Contains(MarkerA, crashed.Output);
        var third = await kernel.RunAsync(BootReport, [], disk.Path);
        Succeeded(third);
        Assert.StartsWith(OriginalCmdline, Section(third.Output, "cmdline"));
        Assert.Contains("crash or reboot before it was confirmed healthy", Section(third.Output, "service"));
        using var status = JsonDocument.Parse(Section(third.Output, "status"));
        Assert.Equal("quarantined", Assert.Single(status.RootElement.GetProperty("patches").EnumerateArray())
            .GetProperty("bootState").GetString());
    }

    [Fact]
    public async Task Status_reports_applied_with_bug_when_a_patch_makes_the_kernel_warn()
    {
        var kernel = await Kernel;
        var result = await kernel.RunAsync("""
            kintsugi kernel load /fixtures/kintsugi_fixture_cmdline_warn.ko || exit 10
            cat /proc/cmdline > /dev/null
            echo @status; kintsugi status --json
            """);
        Succeeded(result);
        using var status = JsonDocument.Parse(Section(result.Output, "status"));
        Assert.Equal("applied-with-bug", status.RootElement.GetProperty("state").GetString());
        Assert.Contains("W", status.RootElement.GetProperty("taint").GetString());
    }

    [Fact]
    public async Task A_patch_that_makes_the_kernel_warn_while_settling_at_boot_is_quarantined()
    {
        using var disk = new TemporaryDisk();
        var second = await RebootAfterInstallingAsync(disk,
            "kintsugi kernel install --no-load /fixtures/kintsugi_fixture_cmdline_warn.ko",
            beforeReport: "until grep -q kintsugi-fixture-warn /proc/cmdline; do sleep 0.2; done");
        Assert.Contains("kernel problems after load", Section(second.Output, "service"));
        using var status = JsonDocument.Parse(Section(second.Output, "status"));
        Assert.Equal("quarantined", Assert.Single(status.RootElement.GetProperty("patches").EnumerateArray())
            .GetProperty("bootState").GetString());
    }

    /// <summary>Installs on a fresh disk in one boot, boots again, and returns that boot's <see
    /// cref="BootReport"/>.</summary>
    private async Task<LabRunResult> RebootAfterInstallingAsync(TemporaryDisk disk, string install,
        string beforeReport = "", IReadOnlyList<string>? kernelArguments = null)
    {
        var kernel = await Kernel;
        Succeeded(await kernel.RunAsync(install, disk: disk.Path));
        var second = await kernel.RunAsync(beforeReport + "\n" + BootReport, [], disk.Path, kernelArguments);
        Succeeded(second);
        return second;
    }

    /// <summary>What a boot did with installed patches: /proc/cmdline, the boot service's log and status, and kintsugi
    /// status.</summary>
    private static string BootReport => $"""
        {WaitForBootService}
        echo @cmdline; cat /proc/cmdline
        echo @service; cat /run/{Kintsugi.Kernel.SystemdUnit.Name}.log
        echo "@service-status=$(cat /run/{Kintsugi.Kernel.SystemdUnit.Name}.status)"
        echo @status; kintsugi status --json
        """;

    /// <summary>Waits until the guest's emulated boot services (the unit's ExecStart) have exited.</summary>
    private static string WaitForBootService =>
        $"until [ -f /run/{Kintsugi.Kernel.SystemdUnit.Name}.status ]; do sleep 0.2; done";
}

[Collection("6.1 cloud kernel")]
public sealed class LivepatchRuntimeOn61CloudKernel() : LivepatchRuntimeSpecification(TestKernels.Debian12Cloud61);

[Collection("6.12 cloud kernel")]
public sealed class LivepatchRuntimeOn612CloudKernel() : LivepatchRuntimeSpecification(TestKernels.Debian12Cloud612);
