using Kintsugi.Kernel.Archive;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>Parsing and scoping source fixes, with kpatch's own integration patches as real inputs.</summary>
public sealed class SourcePatchSpecification
{
    private static string Corpus => Repository.KpatchCorpus;

    public static TheoryData<string> CorpusPatches() =>
        new(Directory.GetFiles(Corpus, "*.patch").Select(Path.GetFileName).Order().Select(n => n!));

    [Theory]
    [MemberData(nameof(CorpusPatches))]
    public void Every_corpus_patch_parses_into_c_files_and_headers_of_the_tree(string name)
    {
        var patch = SourcePatch.Read(Path.Combine(Corpus, name));
        Assert.NotEmpty(patch.Files);
        Assert.All(patch.Files, f => Assert.Matches(@"^[a-z0-9_/.-]+\.[ch]$", f.Path));
        Assert.All(patch.Files, f => Assert.True(f.LinesAdded + f.LinesRemoved > 0));
    }

    [Fact]
    public void A_diff_Nupr_patch_names_its_files_without_the_first_component()
    {
        var patch = SourcePatch.Read(Path.Combine(Corpus, "new-function.patch"));
        var change = Assert.Single(patch.Files);
        Assert.Equal(new FileChange("drivers/tty/n_tty.c", null, FileChangeKind.Modified, 7, 1), change);
    }

    [Fact]
    public void A_git_format_patch_mail_yields_its_subject_and_files()
    {
        var patch = SourcePatch.Parse("0001.patch", """
            From 1234567890abcdef Mon Sep 17 00:00:00 2001
            From: A Kernel Engineer <engineer@example.org>
            Subject: [PATCH] proc: fix cmdline

            Explanation.
            ---
             fs/proc/cmdline.c | 2 +-
             1 file changed, 1 insertion(+), 1 deletion(-)

            diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c
            index 1111111..2222222 100644
            --- a/fs/proc/cmdline.c
            +++ b/fs/proc/cmdline.c
            @@ -1,3 +1,3 @@
             a
            -b
            +c
             d
            --
            2.39.5

            """);
        Assert.Equal("[PATCH] proc: fix cmdline", patch.Subject);
        Assert.Equal(new FileChange("fs/proc/cmdline.c", null, FileChangeKind.Modified, 1, 1),
            Assert.Single(patch.Files));
    }

    [Fact]
    public void A_truncated_patch_is_refused_naming_the_hunk()
    {
        var text = File.ReadAllText(Path.Combine(Corpus, "new-function.patch"));
        var error = Assert.Throws<SourcePatchException>(() =>
            SourcePatch.Parse("cut.patch", text[..(text.Length * 2 / 3)]));
        Assert.Contains("drivers/tty/n_tty.c", error.Message);
    }

    [Fact]
    public void A_hunk_longer_than_its_header_says_is_refused()
    {
        var error = Assert.Throws<SourcePatchException>(() => SourcePatch.Parse("long.patch",
            "--- a/x.c\n+++ b/x.c\n@@ -1,1 +1,1 @@\n-a\n+b\n+c\n"));
        Assert.Contains("more lines than its header says", error.Message);
    }

    [Fact]
    public void Text_without_file_headers_is_not_a_patch() =>
        Assert.Contains("is not a patch",
            Assert.Throws<SourcePatchException>(() => SourcePatch.Parse("notes.txt", "just some notes\n")).Message);

    [Fact]
    public void A_path_escaping_the_tree_is_refused() =>
        Assert.Throws<SourcePatchException>(() =>
            SourcePatch.Parse("evil.patch", "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"));

    [Theory]
    [InlineData("arch/x86/entry/entry_64.S", "assembly")]
    [InlineData("arch/x86/boot/compressed/misc.c", "boot image")]
    [InlineData("net/ipv4/Makefile", "build or configuration change")]
    [InlineData("arch/x86/kernel/vmlinux.lds.S", "linker script")]
    public void What_cannot_be_live_patched_is_refused_up_front_with_the_reason(string path, string reason)
    {
        var patch = SourcePatch.Parse("fix.patch", $"--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n--- " +
            $"a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-a\n+b\n");
        var error = Assert.Throws<SourcePatchException>(() => LivepatchScope.Check([patch]));
        Assert.Contains($"{path}: ", error.Message);
        Assert.Contains(reason, error.Message);
        Assert.DoesNotContain("fs/proc/cmdline.c", error.Message);
    }

    [Fact]
    public void A_fix_touching_only_documentation_has_nothing_to_patch()
    {
        var patch = SourcePatch.Parse("doc.patch",
            "--- a/Documentation/x.rst\n+++ b/Documentation/x.rst\n@@ -1 +1 @@\n-a\n+b\n");
        Assert.Contains("nothing to live patch",
            Assert.Throws<SourcePatchException>(() => LivepatchScope.Check([patch])).Message);
    }

    [Fact]
    public void Headers_and_c_files_are_scoped_for_rebuilding()
    {
        var patch = SourcePatch.Parse("h.patch", "--- a/include/linux/x.h\n+++ b/include/linux/x.h\n@@ -1 +1 " +
            "@@\n-a\n+b\n--- a/fs/x.c\n+++ b/fs/x.c\n@@ -1 +1 @@\n-a\n+b\n--- a/Documentation/x.rst\n+++ " +
            "b/Documentation/x.rst\n@@ -1 +1 @@\n-a\n+b\n");
        Assert.Equal([ChangeScope.Header, ChangeScope.TranslationUnit, ChangeScope.Ignored],
            LivepatchScope.Check([patch]).Select(s => s.Scope));
    }
}

/// <summary>kpatch's corpus states that every patch applies cleanly to Debian's linux-source 6.1.192.</summary>
[Collection("6.1 cloud kernel")]
public sealed class KpatchCorpusSourceSpecification
{
    [Fact]
    public async Task Every_corpus_patch_applies_to_the_6_1_source_and_fuzz_is_reported()
    {
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot).FetchAsync(
            TestKernels.Debian12Cloud61, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        var tree = await KernelSourceTree.PrepareAsync(kernel);
        var corpus = Repository.KpatchCorpus;
        var fuzz = new Dictionary<string, IReadOnlyList<string>>();
        foreach (var file in Directory.GetFiles(corpus, "*.patch").Order())
            fuzz[Path.GetFileName(file)] = await tree.CheckAppliesAsync(SourcePatch.Read(file));
        Assert.Equal(11, fuzz.Count);
        // Written for 6.2, shadow-newpid meets 6.1's kernel/exit.c only with fuzz.
        Assert.Contains(fuzz["shadow-newpid.patch"], f =>
            f.StartsWith("kernel/exit.c: Hunk #2 succeeded", StringComparison.Ordinal) && f.Contains("with fuzz 2"));
        Assert.Empty(fuzz["new-function.patch"]);
    }

    [Fact]
    public async Task A_patch_for_other_source_is_refused_with_patchs_own_report()
    {
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot).FetchAsync(
            TestKernels.Debian12Cloud61, KernelParts.Image | KernelParts.Headers | KernelParts.Source);
        var tree = await KernelSourceTree.PrepareAsync(kernel);
        var patch = SourcePatch.Parse("stale.patch", "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1,1 +1,1 " +
            "@@\n-this line is not in the file\n+replacement\n");
        var error = await Assert.ThrowsAsync<SourcePatchException>(() => tree.CheckAppliesAsync(patch));
        Assert.Contains("does not apply to the source of 6.1.0-56-cloud-amd64", error.Message);
        Assert.Contains("FAILED", error.Message);
    }
}
