using System.Text;
using Kintsugi.Diff;
using Kintsugi.Elf;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Livepatch;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// The module generator turns a diff object into a livepatch the real kernel accepts: registration code,
/// livepatch relocations for symbols the module loader cannot resolve, and the embedded manifest. The
/// diff object here is a hand-written stand-in, so these specifications hold independently of the differ.
/// </summary>
public abstract class LivepatchModuleBuilderSpecification(KernelRelease release)
{
    private static readonly byte[] Manifest = Encoding.UTF8.GetBytes("{\"fixture\":true}");

    private async Task<(FetchedKernel Kernel, string Module)> BuildAsync(TemporaryDirectory directory)
    {
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot).FetchAsync(release,
            KernelParts.Image | KernelParts.Headers);
        var source = Path.Combine(Repository.Root, "tests", "fixtures", "livepatch-generator");
        var standIn = Path.Combine(directory.Path, "stand-in");
        Directory.CreateDirectory(standIn);
        File.Copy(Path.Combine(source, "replacement.c"), Path.Combine(standIn, "replacement.c"));
        await File.WriteAllTextAsync(Path.Combine(standIn, "Kbuild"), "obj-m := replacement.o\n");
        var compile = await ExternalCommand.RunAsync("make",
            ["-C", kernel.HeadersDirectory, $"M={standIn}", "replacement.o"]);
        Assert.True(compile.Succeeded, compile.StandardError + compile.StandardOutput);
        var replacement = Path.Combine(standIn, "replacement.o");
        AsTheDifferEmitsIt(replacement);

        var spec = new LivepatchModuleSpec(
            ModuleName: "kintsugi_generated",
            Description: "generator specification",
            Objects: [new KlpObject("vmlinux", [new KlpFunction("cmdline_proc_show", Sympos.Unique, "kintsugi_new_0")],
                KlpCallbacks.None)],
            DiffObjects: [replacement],
            Bindings:
            [
                new KlpSymbolBinding("saved_command_line", "vmlinux", "saved_command_line", Sympos.Unique),
                new KlpSymbolBinding("linux_banner", "vmlinux", "linux_banner", Sympos.Unique),
            ],
            Manifest: Manifest,
            EffectiveVersion: "99.1-generated");
        var exports = ModuleSymvers.Load(Path.Combine(kernel.HeadersDirectory, "Module.symvers"));
        return (kernel,
            await LivepatchModuleBuilder.BuildAsync(kernel, spec, exports, Path.Combine(directory.Path, "module")));
    }

    /// <summary>
    /// kbuild runs objtool over a single-object module, which names each function's padding <c>__pfx_NAME</c> on
    /// CALL_PADDING kernels; the differ never emits those (objtool adds them again over the linked module).
    /// </summary>
    private static void AsTheDifferEmitsIt(string path)
    {
        var elf = ElfObject.Load(path);
        var referenced = elf.Sections.OfType<ElfRelocationSection>().SelectMany(r => r.Relocations)
            .Select(r => r.Symbol)
            .OfType<ElfSymbol>().ToHashSet();
        elf.SymbolTable!.Symbols.RemoveAll(s => KernelNames.IsPadding(s.Name) && !referenced.Contains(s));
        elf.Save(path);
    }

    [Fact]
    public async Task Unexported_references_become_livepatch_relocations_against_livepatch_symbols()
    {
        using var directory = new TemporaryDirectory();
        var (_, module) = await BuildAsync(directory);

        var elf = ElfObject.Load(module);
        var klp = elf.Sections.OfType<ElfRelocationSection>()
            .Where(s => s.Name.StartsWith(".klp.rela.vmlinux.", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(klp);
        Assert.All(klp, s => Assert.True(s.Flags.HasFlag(ElfSectionFlags.Alloc | ElfSectionFlags.RelaLivepatch),
            $"{s.Name} flags {s.Flags}"));
        var targets = klp.SelectMany(s => s.Relocations).Select(r => r.Symbol!).ToList();
        Assert.Contains(targets, s =>
            s.Name == ".klp.sym.vmlinux.saved_command_line,0" && s.SpecialSection == ElfSpecialSectionIndex.Livepatch);
        Assert.Contains(targets, s => s.Name == ".klp.sym.vmlinux.linux_banner,0");
        Assert.DoesNotContain(elf.SymbolTable!.Symbols,
            s => s.IsUndefined && s.Name is "saved_command_line" or "linux_banner");
        Assert.Equal(Manifest, ((ElfDataSection)elf.FindSection(LivepatchModuleBuilder.ManifestSection)!).Data);
    }

    [Fact]
    public async Task The_generated_module_patches_the_running_kernel_and_binds_unexported_symbols()
    {
        using var directory = new TemporaryDirectory();
        var (_, module) = await BuildAsync(directory);
        var lab = await KernelUnderTest.GetAsync(release);

        var run = await lab.RunAsync("""
            echo "before:$(cat /proc/cmdline)"
            kintsugi kernel load /fixtures/kintsugi_generated.ko || exit 1
            echo "loaded:$(cat /proc/cmdline)"
            kintsugi kernel unload kintsugi_generated || exit 2
            echo "after:$(cat /proc/cmdline)"
            """, [new GuestFile(module, "/fixtures/kintsugi_generated.ko")]);

        Assert.True(run.ExitCode == 0, run.Console);
        var lines = run.Output.Split('\n');
        Assert.DoesNotContain("generated:", lines.Single(l => l.StartsWith("before:", StringComparison.Ordinal)));
        Assert.Matches("^loaded:generated:Linux:.*console=ttyS0",
            lines.Single(l => l.StartsWith("loaded:", StringComparison.Ordinal)));
        Assert.DoesNotContain("generated:", lines.Single(l => l.StartsWith("after:", StringComparison.Ordinal)));
        Assert.DoesNotContain("Call Trace", run.Console);
    }
}

[Collection("6.1 cloud kernel")]
public sealed class LivepatchModuleBuilderOn61CloudKernel()
    : LivepatchModuleBuilderSpecification(TestKernels.Debian12Cloud61);

[Collection("6.12 cloud kernel")]
public sealed class LivepatchModuleBuilderOn612CloudKernel()
    : LivepatchModuleBuilderSpecification(TestKernels.Debian12Cloud612);
