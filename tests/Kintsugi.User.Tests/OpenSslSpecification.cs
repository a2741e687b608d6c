using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>A function of Debian's own libcrypto (libssl3, stripped, exported symbols only) patched in a running
/// process.</summary>
public sealed class OpenSslSpecification : IDisposable
{
    private const int Threads = 8;
    private const string LibCrypto = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3";
    private readonly CompiledPrograms _programs = new();

    public void Dispose() => _programs.Dispose();

    [Fact]
    public void OpenSSL_version_of_the_distributions_libcrypto_is_replaced_and_restored_in_a_running_process()
    {
        Assert.True(File.Exists(LibCrypto), "libssl3 is installed on Debian 12 (scripts/install-prerequisites.sh)");
        var program =
            _programs.Gcc("opensslversion", "-O2", "-g", "-pthread", _programs.Source("opensslversion.c"), LibCrypto);
        var fix = _programs.Gcc("opensslversion-fix.o", "-O2", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c",
            _programs.Source("opensslversion-fix.c"));
        var patch = PatchLinker.Link(LibCrypto, fix, ["OpenSSL_version"], "openssl-version");
        using var target = new RunningTarget(program, Threads.ToString());
        var patcher = new UserPatcher();

        for (var cycle = 0; cycle < 20; cycle++)
        {
            var applied = patcher.Apply(target.Pid, patch);
            Assert.True(applied.Outcome == ProcessOutcome.Applied, $"cycle {cycle}: {applied.Message}");
            var shipped = target.ReadGlobal(program, "shipped_answers");
            var patched = target.ReadGlobal(program, "patched_answers");
            ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "patched_answers") > patched + 8000,
                "the patched function answers");
            // The answers are counted by the callers: a call that returned before the freeze may be counted after
            // it, at most one per thread; after that, no thread may get the shipped answer.
            Assert.InRange(target.ReadGlobal(program, "shipped_answers") - shipped, 0, Threads);

            var reverted = patcher.Revert(target.Pid);
            Assert.True(reverted.Outcome == ProcessOutcome.Reverted, $"cycle {cycle}: {reverted.Message}");
            patched = target.ReadGlobal(program, "patched_answers");
            shipped = target.ReadGlobal(program, "shipped_answers");
            ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "shipped_answers") > shipped + 8000,
                "the shipped function answers");
            Assert.InRange(target.ReadGlobal(program, "patched_answers") - patched, 0, Threads);
        }
        Assert.True(target.Alive, target.Output);
    }
}
