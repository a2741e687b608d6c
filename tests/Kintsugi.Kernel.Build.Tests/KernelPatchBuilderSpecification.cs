using System.Buffers.Binary;
using System.Security.Cryptography;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Livepatch;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// What the builder promises beyond a single fix (the fix corpus covers those): operator signing, targets
/// described by a directory, and header fixes too wide to be a livepatch. On the 6.1 cloud kernel, with the
/// README's demonstration fix.
/// </summary>
[Collection("6.1 cloud kernel")]
public sealed class KernelPatchBuilderSpecification
{
    private static readonly KernelRelease Release = TestKernels.Debian12Cloud61;
    private static string DemoFix => Path.Combine(Repository.Root, "samples", "fixes", "proc-cmdline.patch");

    private static KernelPatchBuilder Builder()
    {
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        return new KernelPatchBuilder(archive, () => new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot,
            Repository.KintsugiBinary, _ => { }), _ => { });
    }

    private static async Task<string> SigningKeyAsync(string directory)
    {
        // As the kernel's own certs/Makefile makes signing_key.pem: the key and its certificate in one file.
        var key = Path.Combine(directory, "signing_key.pem");
        var made = await ExternalCommand.RunAsync("openssl",
            ["req", "-new", "-nodes", "-utf8", "-sha256", "-days", "3650", "-batch", "-x509",
            "-subj", "/CN=Kintsugi test fleet signing key", "-newkey", "rsa:2048", "-keyout", key, "-out", key]);
        Assert.True(made.Succeeded, made.StandardError);
        return key;
    }

    [Fact]
    public async Task A_signed_module_carries_a_kernel_module_signature_that_the_operators_certificate_verifies()
    {
        using var directory = new TemporaryDirectory();
        var key = await SigningKeyAsync(directory.Path);

        var result = await Builder()
            .BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release), [DemoFix], "signed", [], null,
            Path.Combine(directory.Path, "out"), Signing: new ModuleSigningKey(key, key)));

        var module = await File.ReadAllBytesAsync(result.Module!);
        Assert.True(ModuleSigner.IsSigned(module));
        // The kernel's layout: content, PKCS#7 blob, struct module_signature (12 bytes, length big-endian last),
        // marker.
        var info = module.AsSpan(module.Length - ModuleSigner.Marker.Length - 12, 12);
        Assert.Equal(2, info[2]); // PKEY_ID_PKCS7
        var signatureLength = BinaryPrimitives.ReadInt32BigEndian(info[8..]);
        var contentLength = module.Length - ModuleSigner.Marker.Length - 12 - signatureLength;
        var signature = Path.Combine(directory.Path, "signature.p7");
        var content = Path.Combine(directory.Path, "content");
        await File.WriteAllBytesAsync(signature, module.AsSpan(contentLength, signatureLength).ToArray());
        await File.WriteAllBytesAsync(content, module.AsSpan(0, contentLength).ToArray());
        Task<CommandResult> VerifyAsync() => ExternalCommand.RunAsync("openssl",
            ["cms", "-verify", "-binary", "-inform", "DER", "-in", signature, "-content", content, "-certfile", key,
                "-noverify", "-out", "/dev/null"]);

        var verified = await VerifyAsync();
        Assert.True(verified.Succeeded, verified.StandardError);
        module[contentLength / 2] ^= 0x01;
        await File.WriteAllBytesAsync(content, module.AsSpan(0, contentLength).ToArray());
        Assert.False((await VerifyAsync()).Succeeded, "a module changed after signing still verified");

        var certificate = await ExternalCommand.RunAsync("openssl",
            ["x509", "-in", key, "-outform", "DER", "-out", Path.Combine(directory.Path, "cert.der")]);
        Assert.True(certificate.Succeeded, certificate.StandardError);
        var signer = BuildManifest.Read(result.ManifestPath!).Signer!;
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(
            await File.ReadAllBytesAsync(Path.Combine(directory.Path, "cert.der")))), signer.CertificateSha256);
        Assert.Equal("CN=Kintsugi test fleet signing key", signer.Subject);
    }

    [Fact]
    public async Task A_fix_its_before_objects_prove_compiles_no_unit_as_the_distribution_did()
    {
        using var directory = new TemporaryDirectory();
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        var original = Path.Combine(archive.KernelDirectory(Release), "objects", "original", "fs", "proc",
            "cmdline.o");
        // Kept by earlier builds of the same kernel; the proof must not need it.
        if (File.Exists(original)) File.Delete(original);

        var result = await Builder().BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release),
            [DemoFix], "before_proof", [], null, Path.Combine(directory.Path, "out")));

        Assert.Equal(BuildOutcome.Built, result.Outcome);
        Assert.Equal(1, result.Manifest!.Fidelity.FunctionsMatched);
        Assert.Empty(result.Manifest.Fidelity.Mismatches);
        Assert.False(File.Exists(original), "the unit was compiled as the distribution did although its before " +
            "object proved the fix");
        Assert.DoesNotContain(result.Stages, s => s.Stage == "compile original");
    }

    [Fact]
    public async Task A_missing_signing_certificate_is_refused_before_anything_is_built()
    {
        using var directory = new TemporaryDirectory();
        var key = await SigningKeyAsync(directory.Path);
        var missing = Path.Combine(directory.Path, "nowhere.pem");

        var refused = await Assert.ThrowsAsync<ModuleBuildException>(() => Builder()
            .BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release), [DemoFix], "signed", [], null,
            Path.Combine(directory.Path, "out"), Signing: new ModuleSigningKey(key, missing))));

        Assert.Contains(missing, refused.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(directory.Path, "out")),
            "the build started although its signing certificate was missing");
    }

    [Fact]
    public async Task A_system_call_defined_through_kpatch_syscall_h_is_replaced_through_its_entry_stubs()
    {
        using var directory = new TemporaryDirectory();
        var patch = Path.Combine(directory.Path, "newuname.patch");
        // The body of SYSCALL_DEFINE1 is an inline (notrace) function; the compatibility header moves it under a new
        // name.
        await File.WriteAllTextAsync(patch, """
            --- a/kernel/sys.c
            +++ b/kernel/sys.c
            @@ -1296,13 +1296,15 @@
             	return ret;
             }
             
            -SYSCALL_DEFINE1(newuname, struct new_utsname __user *, name)
            +#include "kpatch-syscall.h"
            +KPATCH_SYSCALL_DEFINE1(newuname, struct new_utsname __user *, name)
             {
             	struct new_utsname tmp;
             
             	down_read(&uts_sem);
             	memcpy(&tmp, utsname(), sizeof(tmp));
             	up_read(&uts_sem);
            +	tmp.machine[0] ^= 0;
             	if (copy_to_user(name, &tmp, sizeof(tmp)))
             		return -EFAULT;
             

            """);

        var result = await Builder().BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release), [patch],
            "newuname", [], null, Path.Combine(directory.Path, "out")));

        Assert.Equal(BuildOutcome.Built, result.Outcome);
        var replaced = result.Manifest!.Functions.Select(f => f.Name).ToList();
        Assert.Contains("__x64_sys_newuname", replaced);
        Assert.DoesNotContain("__do_sys_newuname", replaced);
    }

    [Fact]
    public async Task A_context_patch_is_applied_with_the_fixes_but_compiles_none_of_the_units_that_include_it()
    {
        using var directory = new TemporaryDirectory();
        // proc_fs.h is included by hundreds of units: as a fix it would be refused (too many units); as the
        // context of a fix that uses its addition, only the fix's unit sees it.
        var header = Path.Combine(directory.Path, "proc_fs.patch");
        await File.WriteAllTextAsync(header, """
            --- a/include/linux/proc_fs.h
            +++ b/include/linux/proc_fs.h
            @@ -32,2 +32,4 @@
             
            +#define PROC_LINE_END "\n"
            +
             struct proc_ops {

            """);
        var fix = Path.Combine(directory.Path, "cmdline.patch");
        await File.WriteAllTextAsync(fix, """
            --- a/fs/proc/cmdline.c
            +++ b/fs/proc/cmdline.c
            @@ -9,3 +9,3 @@
             	seq_puts(m, saved_command_line);
            -	seq_putc(m, '\n');
            +	seq_puts(m, PROC_LINE_END);
             	return 0;

            """);

        var result = await Builder()
            .BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release), [fix], "context", [], null,
            Path.Combine(directory.Path, "out"), ContextPatchFiles: [header]));

        Assert.Equal(BuildOutcome.Built, result.Outcome);
        Assert.Equal(["fs/proc/cmdline.o"], result.Manifest!.Units.Select(u => u.Object));
        Assert.Equal(["cmdline_proc_show"], result.Manifest.Functions.Select(f => f.Name));
        Assert.Equal([(Path.GetFileName(header), true), (Path.GetFileName(fix), false)],
            result.Manifest.Patches.Select(p => (p.Name, p.Context == true)));
    }

    [Fact]
    public async Task A_fix_that_changes_the_symbol_version_of_an_exported_symbol_is_refused()
    {
        using var directory = new TemporaryDirectory();
        var patch = Path.Combine(directory.Path, "core-include.patch");
        // kpatch's symvers-disagreement case: one more #include makes types of device_add's interface visible to
        // genksyms.
        await File.WriteAllTextAsync(patch, """
            --- a/drivers/base/core.c
            +++ b/drivers/base/core.c
            @@ -35,4 +35,6 @@
             #include "physical_location.h"
             #include "power/power.h"
             
            +#include <linux/blktrace_api.h>
            +
             #ifdef CONFIG_SYSFS_DEPRECATED

            """);

        var refused = await Assert.ThrowsAsync<LivepatchRefusedException>(() => Builder()
            .BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release), [patch], "symvers", [], null,
            Path.Combine(directory.Path, "out"))));

        Assert.Equal([Kintsugi.Diff.RefusalRule.ExportedInterfaceChanged], refused.Rules);
        Assert.Contains("drivers/base/core.c: ", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_header_fix_included_by_too_many_units_is_refused_with_the_units_listed()
    {
        using var directory = new TemporaryDirectory();
        var patch = Path.Combine(directory.Path, "seq-overflow.patch");
        await File.WriteAllTextAsync(patch, """
            --- a/include/linux/seq_file.h
            +++ b/include/linux/seq_file.h
            @@ -51,4 +51,4 @@
             static inline bool seq_has_overflowed(struct seq_file *m)
             {
            -	return m->count == m->size;
            +	return m->count >= m->size;
             }

            """);

        var refused = await Assert.ThrowsAsync<LivepatchRefusedException>(() =>
            Builder().BuildAsync(new KernelBuildRequest(new TargetReference.Debian(Release), [patch], null, [], null,
            Path.Combine(directory.Path, "out"), MaxUnits: 5)));

        Assert.Contains("more than 5", refused.Message, StringComparison.Ordinal);
        Assert.Contains("  fs/seq_file.c", refused.Message, StringComparison.Ordinal);
        Assert.Contains("--max-units", refused.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Another distribution's layout, made from the Debian kernel's parts: a hard-linked copy of its prepared
    /// tree (the builder never writes into a target's tree) with Module.symvers where a kernel build leaves it,
    /// the given System.map, the image and the modules.
    /// </summary>
    private static async Task<(FetchedKernel Kernel, string Target)> TargetDirectoryAsync(string directory,
        Func<FetchedKernel, Task<string>> systemMap)
    {
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        var kernel = await archive.FetchAsync(Release, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        var prepared = await KernelSourceTree.PrepareAsync(kernel, _ => { });
        var target = Path.Combine(directory, "target");
        Directory.CreateDirectory(target);
        var copied = await ExternalCommand.RunAsync("cp", ["-al", prepared.Directory, Path.Combine(target, "source")]);
        Assert.True(copied.Succeeded, copied.StandardError);
        File.Copy(Path.Combine(kernel.HeadersDirectory, "Module.symvers"),
            Path.Combine(target, "source", "Module.symvers"));
        File.CreateSymbolicLink(Path.Combine(target, "System.map"), await systemMap(kernel));
        File.CreateSymbolicLink(Path.Combine(target, "vmlinuz"), kernel.Vmlinuz);
        File.CreateSymbolicLink(Path.Combine(target, "modules"), kernel.ModulesDirectory);
        return (kernel, target);
    }

    [Fact]
    public async Task A_target_described_by_a_directory_builds_a_module_that_patches_that_kernel()
    {
        using var directory = new TemporaryDirectory();
        var lab = await KernelUnderTest.GetAsync(Release);
        // The symbol table as a user of another distribution gets it: /proc/kallsyms of the kernel booted with nokaslr.
        var (kernel, target) = await TargetDirectoryAsync(directory.Path, async _ =>
        {
            var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
            await Kintsugi.Kernel.Build.Symbols.KallsymsCapture.BootAsync(() => lab.Lab, Release,
                archive.KernelDirectory(Release), _ => { });
            return Path.Combine(archive.KernelDirectory(Release),
                Kintsugi.Kernel.Build.Symbols.KallsymsCapture.BootedFileName);
        });

        var result = await Builder().BuildAsync(new KernelBuildRequest(new TargetReference.TargetDirectory(target),
            [DemoFix], "elsewhere", [], null, Path.Combine(directory.Path, "out")));

        Assert.Equal(BuildOutcome.Built, result.Outcome);
        Assert.Equal(kernel.Target.BuildId.ToString(), result.Manifest!.Target.BuildId);
        Assert.True(result.Manifest.Fidelity.Checked && result.Manifest.Fidelity.FunctionsMatched > 0
            && result.Manifest.Fidelity.Mismatches.Count == 0);
        var check = Path.Combine(directory.Path, "check.sh");
        await File.WriteAllTextAsync(check, "grep -q 'live patched by Kintsugi' /proc/cmdline\n");
        var verdict = await new PatchVerification(lab.Lab).RunAsync(Release, result.Module!, check,
            TimeSpan.FromMinutes(5));
        Assert.True(verdict.Verdict == "pass", string.Join('\n', verdict.Steps.Select(s => $"{s.Name}: {s.ExitCode}")
            .Concat(verdict.LogProblems).Concat(verdict.TaintProblems)));
    }

    [Fact]
    public async Task A_target_directory_with_a_placeholder_System_map_is_refused_saying_where_the_real_symbols_are()
    {
        using var directory = new TemporaryDirectory();
        // Debian's own /boot/System.map is such a placeholder.
        var (kernel, target) = await TargetDirectoryAsync(directory.Path,
            k => Task.FromResult(Path.Combine(k.Root, "boot", $"System.map-{Release}")));

        var refused = await Assert.ThrowsAsync<ModuleBuildException>(() => Builder().BuildAsync(
            new KernelBuildRequest(new TargetReference.TargetDirectory(target), [DemoFix], "elsewhere", [], null,
                Path.Combine(directory.Path, "out"))));

        Assert.Contains("/proc/kallsyms", refused.Message, StringComparison.Ordinal);
        Assert.Equal(ExitCode.Usage, refused.ExitCode);
    }
}
