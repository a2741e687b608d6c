using Kintsugi.Kernel;

namespace Kintsugi.Core.Tests;

public sealed class KernelReleaseSpecification
{
    [Theory]
    [InlineData("6.1.0-56-cloud-amd64", 6, 1, 0)]
    [InlineData("6.12.117+deb12-cloud-amd64", 6, 12, 117)]
    public void A_release_parses_with_its_upstream_version(string text, int major, int minor, int patch)
    {
        var release = KernelRelease.Parse(text);
        Assert.Equal(text, release.Value);
        Assert.Equal(new Version(major, minor, patch), release.UpstreamVersion);
    }

    [Theory]
    [InlineData("")]
    [InlineData("cloud-amd64")]
    [InlineData("6.1.0 56")]
    [InlineData("6.1.0-56/../../etc")]
    public void Text_that_uname_could_not_print_is_rejected(string text) =>
        Assert.False(KernelRelease.TryParse(text, out _));
}

public sealed class BuildIdSpecification
{
    [Fact]
    public async Task The_build_id_note_of_a_linked_program_matches_what_readelf_reports()
    {
        using var directory = new TemporaryDirectory();
        var source = directory["p.c"];
        await File.WriteAllTextAsync(source, "int main(void) { return 0; }\n");
        var program = directory["p"];
        Assert.True((await ExternalCommand.RunAsync("gcc-12", ["-Wl,--build-id=sha1", "-o", program, source]))
            .Succeeded);
        var readelf = await ExternalCommand.RunAsync("readelf", ["-n", program]);
        var expected = readelf.StandardOutput.Split('\n').Single(l => l.Contains("Build ID:")).Split(':')[1].Trim();

        var table = ElfSectionTable.Read(await File.ReadAllBytesAsync(program));
        Assert.Equal(expected, table.FindBuildId().ToString());
    }

    [Fact]
    public void Notes_without_a_gnu_build_id_yield_none()
    {
        // A Xen note of type 3 (the build-id's type number under another owner), as vmlinux carries.
        byte[] notes = [4, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, (byte)'X', (byte)'e', (byte)'n', 0, 1, 2, 3, 4];
        Assert.Null(BuildId.FromNotes(notes));
    }

    [Fact]
    public void A_truncated_note_yields_none_rather_than_reading_past_its_end()
    {
        byte[] notes = [4, 0, 0, 0, 200, 0, 0, 0, 3, 0, 0, 0, (byte)'G', (byte)'N', (byte)'U', 0, 1, 2];
        Assert.Null(BuildId.FromNotes(notes));
    }
}

public sealed class PatchStateSpecification
{
    [Fact]
    public void Every_state_has_the_wire_name_of_the_shared_vocabulary()
    {
        Assert.Equal(
            ["nothing-to-apply", "applying", "applied", "apply-failed", "applied-with-bug", "kernel-unsupported",
            "revoked", "disabled"],
            Enum.GetValues<PatchState>().Select(s => s.ToWire()).ToArray());
        foreach (var state in Enum.GetValues<PatchState>()) Assert.Equal(state, PatchStates.Parse(state.ToWire()));
    }

    [Fact]
    public void An_unknown_wire_name_is_rejected_with_the_known_ones() =>
        Assert.Contains("applied-with-bug", Assert.Throws<FormatException>(() => PatchStates.Parse("patched")).Message);
}

public sealed class TaintSpecification
{
    [Fact]
    public void Loading_an_unsigned_out_of_tree_livepatch_is_not_a_problem()
    {
        // 45056 = O + E + K, what the lab kernels show after loading a test livepatch.
        Assert.Empty(new Taint(45056).ProblemsAddedSince(new Taint(0)));
        Assert.Equal("OEK", new Taint(45056).Letters);
    }

    [Fact]
    public void A_warning_or_an_oops_after_the_load_is_a_problem()
    {
        var problems = new Taint(45056 | 512 | 128).ProblemsAddedSince(new Taint(45056));
        Assert.Equal(["D (kernel died (oops or BUG))", "W (kernel warning)"], problems);
    }

    [Fact]
    public void A_problem_present_before_the_load_is_not_blamed_on_it() =>
        Assert.Empty(new Taint(512 | 32768).ProblemsAddedSince(new Taint(512)));
}

public sealed class EffectiveVersionSpecification
{
    [Fact]
    public void The_debian_package_version_is_replaced_by_the_effective_one() =>
        Assert.Equal("#1 SMP PREEMPT_DYNAMIC Debian 6.1.193-1 (2026-11-16)",
            MachineStatus.EffectiveVersionString("#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)", "6.1.193-1"));

    [Fact]
    public void A_string_longer_than_the_kernel_keeps_drops_the_build_date_never_part_of_the_version() =>
        Assert.Equal("#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1+kintsugi1",
            MachineStatus.EffectiveVersionString("#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2026-11-14)",
                "6.12.117-1~deb12u1+kintsugi1"));

    [Fact]
    public void A_string_that_fits_the_kernel_keeps_its_build_date() =>
        Assert.Equal("#1 SMP PREEMPT_DYNAMIC Debian 6.12.130-1~deb12u1 (2026-11-14)",
            MachineStatus.EffectiveVersionString("#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2026-11-14)",
                "6.12.130-1~deb12u1"));

    [Fact]
    public void Without_applied_patches_the_effective_version_is_the_running_one() =>
        Assert.Equal("#1 SMP Debian 6.1.192-2", MachineStatus.EffectiveVersionString("#1 SMP Debian 6.1.192-2", null));
}
