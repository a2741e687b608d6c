using System.Security.Cryptography;
using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>
/// The builder obtains the exact source of a Debian package version itself (apt-get source through the private apt
/// state in the shared cache), unpacks it once per content, and reads the build flags as the package's build sets them.
/// </summary>
public sealed class DebianSourceSpecification
{
    private static readonly SourcePackage Hello = SourcePackage.Parse("hello=2.10-3");

    [Fact]
    public async Task The_exact_source_is_fetched_once_and_unpacked_into_a_tree_keyed_by_its_content()
    {
        var messages = new List<string>();
        var source = new DebianSource(DebianSource.DefaultCacheRoot, messages.Add);

        var first = await source.PrepareAsync(Hello);
        messages.Clear();
        var again = await source.PrepareAsync(Hello);

        Assert.True(File.Exists(Path.Combine(first.Tree, "debian", "rules")), first.Tree);
        Assert.True(File.Exists(Path.Combine(first.Tree, "src", "hello.c")), first.Tree);
        var dsc = Directory.GetFiles(Path.Combine(DebianSource.DefaultCacheRoot, "user", "sources", "hello_2.10-3"),
            "*.dsc").Single();
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(dsc))), first.DscSha256);
        Assert.Equal(first.DscSha256, Path.GetFileName(Path.GetDirectoryName(first.Tree)));
        Assert.Equal(first.Tree, again.Tree);
        Assert.Empty(messages);   // nothing downloaded or unpacked the second time
        Assert.Contains($"-ffile-prefix-map={first.Tree}=.", first.CompilerFlags);
        Assert.Contains("-D_FORTIFY_SOURCE=2", first.CompilerFlags);
    }

    [Fact]
    public async Task The_flags_are_those_dpkg_buildflags_gives_with_the_settings_debian_rules_exports()
    {
        using var tree = new TemporaryDirectory();
        Directory.CreateDirectory(tree["debian"]);
        await File.WriteAllTextAsync(Path.Combine(tree.Path, "debian", "rules"),
            "#!/usr/bin/make -f\nexport DEB_BUILD_MAINT_OPTIONS = hardening=+all\nexport DEB_CFLAGS_MAINT_APPEND " +
            "= -Wall \\\n  -Wno-unused\n" +
            "DEB_CPPFLAGS_MAINT_APPEND := -DKINTSUGI_RULES\n%:\n\tdh $@\n");

        var flags = await DebianSource.BuildFlagsAsync(tree.Path);
        var plain = await DebianSource.BuildFlagsAsync(Path.GetTempPath());

        Assert.Equal(["-Wall", "-Wno-unused"], flags.TakeLast(2));
        Assert.Contains("-DKINTSUGI_RULES", flags);
        Assert.DoesNotContain("-Wall", plain);
        Assert.Contains("-O2", flags);
    }

    [Theory]
    [InlineData("postgresql-15")]
    [InlineData("=1.0")]
    [InlineData("hello=1.0; rm -rf /")]
    public void A_package_that_is_not_name_equals_version_is_refused(string text) =>
        Assert.Equal(ExitCode.Usage, Assert.Throws<UserBuildException>(() => SourcePackage.Parse(text)).ExitCode);
}
