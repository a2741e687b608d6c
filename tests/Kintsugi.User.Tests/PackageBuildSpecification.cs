using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>
/// A patch built from nothing but a Debian package's shipped object and a fix: the builder fetches the exact source,
/// configures it as Debian's build does (its dh sequence up to the configure step, the headers the build generates),
/// and compiles each touched unit with the command the package's own build uses for it. Debian's libcrypto of
/// openssl 3.0.20-1~deb12u2 (bookworm main; not the installed version, so its binary is fetched too) is patched in
/// a running process with the result. The first run downloads the source (about 15 MB) and configures it (minutes):
/// run with <c>KINTSUGI_USER_PACKAGES=1</c>.
/// </summary>
public sealed class PackageBuildSpecification : IDisposable
{
    private const int Threads = 8;
    private static readonly SourcePackage OpenSsl = SourcePackage.Parse("openssl=3.0.20-1~deb12u2");
    private static readonly SourcePackage LibSsl = SourcePackage.Parse("libssl3=3.0.20-1~deb12u2");
    private readonly CompiledPrograms _programs = new();

    public void Dispose() => _programs.Dispose();

    [PackageBuildFact]
    public async Task A_fix_to_libcrypto_is_built_from_the_package_alone_and_replaces_the_function_in_a_process()
    {
        var messages = new List<string>();
        var debian = new DebianSource(DebianSource.DefaultCacheRoot, messages.Add);
        var root = await debian.UnpackBinaryAsync(LibSsl);
        var library = Path.Combine(root, "usr/lib/x86_64-linux-gnu");
        var prepared = await debian.PrepareAsync(OpenSsl);
        var configured = await new SourceConfigurator(messages.Add).ConfigureAsync(prepared);
        var output = Path.Combine(_programs.Directory, "version-text.kup.json");

        var built = await new UserPatchBuilder(messages.Add).BuildAsync(new UserBuildRequest(
            Path.Combine(library, "libcrypto.so.3"), configured.Tree, Fixture("version-text.diff"),
            prepared.CompilerFlags, "openssl-version-text", output, Configured: configured));

        Assert.Equal(["OpenSSL_version"], built.Functions);
        // cversion.c compiles in both Debian builds (build_static, build_shared); the proof picked the one that made it
        Assert.True(configured.CommandsFor("crypto/cversion.c").Count >= 2,
            string.Join('\n', configured.CommandsFor("crypto/cversion.c")));
        var program = _programs.Gcc("opensslversion", "-O2", "-g", "-pthread", _programs.Source("opensslversion.c"),
            Path.Combine(library, "libcrypto.so.3"));
        using var target = new RunningTarget(program, Threads.ToString(), library);
        var patch = UserPatch.Load(output);
        var patcher = new UserPatcher();
        var patched = target.ReadGlobal(program, "patched_answers");

        var applied = patcher.Apply(target.Pid, patch);
        Assert.True(applied.Outcome == ProcessOutcome.Applied, applied.Message);
        ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "patched_answers") > patched + 8000,
            "the fixed OpenSSL_version answers");
        Assert.Equal(ProcessOutcome.Reverted, patcher.Revert(target.Pid).Outcome);
        var shipped = target.ReadGlobal(program, "shipped_answers");
        ApplyRevertSpecification.WaitUntil(() => target.ReadGlobal(program, "shipped_answers") > shipped + 8000,
            "the shipped OpenSSL_version answers again");
        Assert.True(target.Alive, target.Output);
    }

    [Fact]
    public void A_dry_runs_compile_commands_are_read_with_their_directory_quotes_and_outputs()
    {
        const string tree = "/src/pkg";
        var dryRun = """
            make: Entering directory '/src/pkg/build'
            make[1]: Entering directory '/src/pkg/build/lib'
            gcc -I. -DDIR="\"/usr/lib/ssl\"" -O2 -MMD -MF lib/x.d.tmp -c -o x.o ../../lib/x.c
            make[1]: Leaving directory '/src/pkg/build/lib'
            depbase=`echo y.o`; gcc -O2 -c -o y.o ../y.c && mv -f $depbase.Tpo $depbase.Po
            gcc -o program x.o y.o
            gcc -c -o outside.o /usr/share/outside.c
            """;

        var commands = SourceConfigurator.CompileCommands(dryRun, tree, "/src/pkg/build").ToList();

        Assert.Equal(2, commands.Count);
        Assert.Equal(
            new UnitCommand("build/lib", ["gcc", "-I.", "-DDIR=\"/usr/lib/ssl\"", "-O2", "-c", "../../lib/x.c"], "x.o")
                .ToString(), commands[0].ToString());
        Assert.Equal("x.o", commands[0].Output);
        Assert.Equal("build", commands[1].Directory);
        Assert.Equal(["gcc", "-O2", "-c", "../y.c"], commands[1].Arguments);
        var configured = new ConfiguredSource(tree, commands);
        Assert.Single(configured.CommandsFor("lib/x.c"));
        Assert.Single(configured.CommandsFor("y.c"));
        Assert.Empty(configured.CommandsFor("x.c"));
    }

    [Fact]
    public void A_cmake_makefiles_compile_commands_run_where_their_cd_goes()
    {
        const string tree = "/src/pkg";
        var dryRun = """
            make[2]: Entering directory '/src/pkg/obj-x86_64-linux-gnu'
            cd /src/pkg/obj-x86_64-linux-gnu/lib && /usr/bin/cc -DZSTD -I/src/pkg/lib -g -O2 -fPIC -MD -MT lib/CMakeFiles/z.dir/z.c.o -MF CMakeFiles/z.dir/z.c.o.d -o CMakeFiles/z.dir/z.c.o -c /src/pkg/lib/z.c
            """;

        var command = Assert.Single(SourceConfigurator.CompileCommands(dryRun, tree, "/src/pkg"));

        Assert.Equal("obj-x86_64-linux-gnu/lib", command.Directory);
        Assert.Equal(["/usr/bin/cc", "-DZSTD", "-I/src/pkg/lib", "-g", "-O2", "-fPIC", "-c", "/src/pkg/lib/z.c"],
            command.Arguments);
        Assert.Equal((BuildTool.Make, "CMakeFiles/z.dir/z.c.o"), (command.Tool, command.Output));
    }

    [Fact]
    public void A_ninja_builds_compile_commands_are_read_from_its_compilation_database()
    {
        const string tree = "/src/glib";
        // as `ninja -t compdb` prints it in a meson build directory: C units, a C++ unit, a custom command, a link
        var database = """
            [
              {
                "directory": "/src/glib/debian/build/deb",
                "command": "cc -Iglib/libglib-2.0.so.0.7400.6.p -Iglib -I../../../glib -fdiagnostics-color=always -D_FILE_OFFSET_BITS=64 -std=gnu99 -g -O2 '-DG_LOG_DOMAIN=\"GLib\"' -fPIC -MD -MQ glib/libglib-2.0.so.0.7400.6.p/gbase64.c.o -MF glib/libglib-2.0.so.0.7400.6.p/gbase64.c.o.d -o glib/libglib-2.0.so.0.7400.6.p/gbase64.c.o -c ../../../glib/gbase64.c",
                "file": "../../../glib/gbase64.c",
                "output": "glib/libglib-2.0.so.0.7400.6.p/gbase64.c.o"
              },
              {
                "directory": "/src/glib/debian/build/deb",
                "command": "c++ -Igio -o gio/x.cpp.o -c ../../../gio/x.cpp",
                "file": "../../../gio/x.cpp",
                "output": "gio/x.cpp.o"
              },
              {
                "directory": "/src/glib/debian/build/deb",
                "command": "/usr/bin/python3 ../../../tools/gen.py glib/gversionmacros.h",
                "file": "../../../tools/gen.py",
                "output": "glib/gversionmacros.h"
              },
              {
                "directory": "/src/glib/debian/build/deb",
                "command": "cc -o glib/libglib-2.0.so.0.7400.6 glib/libglib-2.0.so.0.7400.6.p/gbase64.c.o -shared",
                "file": "glib/libglib-2.0.so.0.7400.6.p/gbase64.c.o",
                "output": "glib/libglib-2.0.so.0.7400.6"
              }
            ]
            """;

        var command = Assert.Single(SourceConfigurator.NinjaCompileCommands(database, tree));

        Assert.Equal(("debian/build/deb", BuildTool.Ninja, "glib/libglib-2.0.so.0.7400.6.p/gbase64.c.o"),
            (command.Directory, command.Tool, command.Output));
        Assert.Contains("-DG_LOG_DOMAIN=\"GLib\"", command.Arguments);
        Assert.DoesNotContain("-MD", command.Arguments);
        Assert.Equal("../../../glib/gbase64.c", command.Arguments[^1]);
        Assert.Single(new ConfiguredSource(tree, [command]).CommandsFor("glib/gbase64.c"));
    }

    private static string Fixture(string name) =>
        Path.Combine(AppContext.BaseDirectory, "Fixtures", "openssl", name);
}

/// <summary>A fact run only with <c>KINTSUGI_USER_PACKAGES=1</c>.</summary>
public sealed class PackageBuildFactAttribute : FactAttribute
{
    public const string Variable = "KINTSUGI_USER_PACKAGES";

    public PackageBuildFactAttribute()
    {
        if (Environment.GetEnvironmentVariable(Variable) != "1")
            Skip = $"fetches and configures a Debian source package once (minutes, debhelper needed): run with " +
                $"{Variable}=1";
    }
}
