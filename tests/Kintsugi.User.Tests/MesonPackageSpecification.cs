using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>
/// A meson-built Debian library patched in a running process with a real upstream security fix, taken verbatim from
/// Debian's own data at test time. The target is a shipped binary that lacks the fix: libglib-2.0.so.0 of
/// libglib2.0-0 2.74.6-2+deb12u2 (bookworm-security). Its source package does not download here (sources of the
/// security suites do not), so it is rebuilt from the later glib2.0 2.74.6-2+deb12u9 of bookworm main: that package's
/// debian/patches series, cut back to the patches 2.74.6-2+deb12u2 carried (every later upload, as its changelog says,
/// appended its patches to the series, the first being <see cref="FirstLaterPatch"/>), with the changelog cut back to
/// that version, made into a source package again with dpkg-source. The builder's fidelity proof then shows the
/// rebuilt source compiles to the shipped code of every replaced function. The fix is CVE-2026-1484 (an integer
/// overflow in <c>g_base64_encode</c>): the two patches 2.74.6-2+deb12u9 carries for it, as Debian carries them. Its
/// compiled code is proven equal to Debian's own fixed build (libglib2.0-0 2.74.6-2+deb12u9). The first run downloads
/// both versions, installs glib's build dependencies and configures it with meson (minutes): run with
/// <c>KINTSUGI_USER_PACKAGES=1</c>.
/// </summary>
public sealed class MesonPackageSpecification : IDisposable
{
    private const int Threads = 8;
    private const string TargetVersion = "2.74.6-2+deb12u2";
    private const string FixedVersion = "2.74.6-2+deb12u9";
    private const string FirstLaterPatch = "gdbusmessage-Clean-the-cached-arg0-when-setting-the-messa.patch";
    private static readonly string[] FixPatches = ["CVE-2026-1484-1.patch", "CVE-2026-1484-2.patch"];
    private const string Library = "usr/lib/x86_64-linux-gnu/libglib-2.0.so.0";
    private readonly CompiledPrograms _programs = new();

    public void Dispose() => _programs.Dispose();

    [PackageBuildFact]
    public async Task A_debian_security_fix_to_glib_built_with_meson_replaces_g_base64_encode_in_a_running_process()
    {
        var messages = new List<string>();
        var debian = new DebianSource(DebianSource.DefaultCacheRoot, messages.Add);
        var fixedSource = await debian.FetchAsync(SourcePackage.Parse($"glib2.0={FixedVersion}"));
        var (dsc, fix) = await RebuildTargetSourceAsync(fixedSource);
        var prepared = await debian.PrepareLocalAsync(dsc);
        Assert.Equal(SourcePackage.Parse($"glib2.0={TargetVersion}"), prepared.Package);
        var configured = await new SourceConfigurator(messages.Add).ConfigureAsync(prepared,
            installBuildDependencies: true);
        // dh configures two meson builds (the deb's and the udeb's); their ninja files give the commands
        var commands = configured.CommandsFor("glib/gbase64.c");
        Assert.True(commands.Count >= 2 && commands.All(c => c.Tool == BuildTool.Ninja),
            string.Join('\n', commands));
        var shipped = Path.Combine(await debian.UnpackBinaryAsync(SourcePackage.Parse(
            $"libglib2.0-0={TargetVersion}")), Library);
        var debianFixed = Path.Combine(await debian.UnpackBinaryAsync(SourcePackage.Parse(
            $"libglib2.0-0={FixedVersion}")), Library);
        var output = Path.Combine(_programs.Directory, "cve-2026-1484.kup.json");

        var request = new UserBuildRequest(shipped, configured.Tree, fix, prepared.CompilerFlags,
            "glib-cve-2026-1484", output, Configured: configured, FixedObjectPath: debianFixed);
        var built = await new UserPatchBuilder(messages.Add).BuildAsync(request);

        Assert.Equal(["g_base64_encode"], built.Functions);
        Assert.Contains(messages, m => m.Contains("the fixed code of g_base64_encode equals"));
        // the same comparison against a build without the fix (the target itself) refuses
        var unfixed = await Assert.ThrowsAsync<UserBuildException>(() => new UserPatchBuilder().BuildAsync(
            request with { FixedObjectPath = shipped, OutputPath = output + ".unfixed" }));
        Assert.Equal("fixed-build", unfixed.Rule);
        var program = _programs.Gcc("glibbase64", "-O2", "-g", "-pthread", _programs.Source("glibbase64.c"), shipped);
        using var target = new RunningTarget(program, Threads.ToString(), Path.GetDirectoryName(shipped));
        var patch = UserPatch.Load(output);
        var patcher = new UserPatcher();
        for (var round = 0; round < 20; round++)
        {
            var applied = patcher.Apply(target.Pid, patch);
            Assert.True(applied.Outcome == ProcessOutcome.Applied, applied.Message);
            Assert.Equal(patch.IdHex, Assert.Single(UserPatcher.List(target.Pid)).PatchId);
            var right = target.ReadGlobal(program, "encoded_right");
            ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "encoded_right") > right + 2000,
                "the patched g_base64_encode answers");
            Assert.Equal(ProcessOutcome.Reverted, patcher.Revert(target.Pid).Outcome);
            Assert.Empty(UserPatcher.List(target.Pid));
        }
        Assert.Equal(0, target.ReadGlobal(program, "encoded_wrong"));
        Assert.True(target.Alive, target.Output);
    }

    /// <summary>
    /// The source package of <see cref="TargetVersion"/>, rebuilt from the .dsc of <see cref="FixedVersion"/> (kept in
    /// the cache, so a second run configures nothing), and the fix: the patches of <see cref="FixPatches"/> from that
    /// package's debian/patches, verbatim, one after the other.
    /// </summary>
    private static async Task<(string Dsc, string Fix)> RebuildTargetSourceAsync(string fixedDsc)
    {
        var root = Path.Combine(DebianSource.DefaultCacheRoot, "user", "rebuilt", $"glib2.0_{TargetVersion}");
        var dsc = Path.Combine(root, $"glib2.0_{TargetVersion}.dsc");
        var fix = Path.Combine(root, "cve-2026-1484.diff");
        if (File.Exists(dsc) && File.Exists(fix)) return (dsc, fix);
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        Directory.CreateDirectory(root);
        var tree = Path.Combine(root, "glib2.0-2.74.6");
        await Run("dpkg-source", ["--no-check", "--skip-patches", "-x", fixedDsc, tree], root);
        var patches = Path.Combine(tree, "debian", "patches");
        await File.WriteAllTextAsync(fix, string.Concat(await Task.WhenAll(
            FixPatches.Select(p => File.ReadAllTextAsync(Path.Combine(patches, p))))));

        var series = (await File.ReadAllLinesAsync(Path.Combine(patches, "series"))).ToList();
        var cut = series.IndexOf(FirstLaterPatch);
        Assert.True(cut > 0, $"{FirstLaterPatch} is not in the series of glib2.0 {FixedVersion}");
        await File.WriteAllLinesAsync(Path.Combine(patches, "series"), series.Take(cut));
        var changelog = await File.ReadAllTextAsync(Path.Combine(tree, "debian", "changelog"));
        var entry = changelog.IndexOf($"glib2.0 ({TargetVersion})", StringComparison.Ordinal);
        Assert.True(entry > 0, $"the changelog of glib2.0 {FixedVersion} has no entry for {TargetVersion}");
        await File.WriteAllTextAsync(Path.Combine(tree, "debian", "changelog"), changelog[entry..]);
        await Run("dpkg-source", ["-b", tree], root);
        Directory.Delete(tree, recursive: true);
        Assert.True(File.Exists(dsc), $"dpkg-source -b made no {dsc}");
        return (dsc, fix);
    }

    private static async Task Run(string file, string[] arguments, string directory)
    {
        var result = await ExternalCommand.RunAsync(file, arguments, directory);
        Assert.True(result.Succeeded, $"{file} {string.Join(' ', arguments)}: {result.StandardError}");
    }
}
