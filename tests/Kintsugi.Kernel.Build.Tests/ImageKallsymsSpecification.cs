using System.Buffers.Binary;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Lab;
using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// The vmlinux symbol table decoded from a kernel's image is the one the kernel lists in /proc/kallsyms when booted
/// (names, type letters, addresses and order, which sympos counts in) on every kernel line, whose kallsyms tables
/// lie in three different orders; an image whose tables were damaged is refused, never decoded into a wrong table.
/// </summary>
public abstract class ImageKallsymsSpecification(KernelRelease release)
{
    private async Task<(DebianKernelArchive Archive, byte[] Vmlinux)> ImageAsync()
    {
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        var kernel = await archive.FetchAsync(release, KernelParts.Image);
        return (archive, await KernelImage.ReadVmlinuxAsync(kernel.Vmlinuz));
    }

    [Fact]
    public async Task The_table_decoded_from_the_image_is_the_one_the_booted_kernel_lists()
    {
        var (archive, vmlinux) = await ImageAsync();

        var decoded = ImageKallsyms.Read(VmlinuxImage.Parse(vmlinux)).Symbols;

        // The ground truth: /proc/kallsyms of the kernel booted in the lab with nokaslr, cached per kernel.
        var booted = await KallsymsCapture.BootAsync(
            () => new LabMachine(archive, DebianKernelArchive.DefaultCacheRoot, Repository.KintsugiBinary, _ => { }),
            release, archive.KernelDirectory(release), _ => { });
        Assert.Equal(SymbolTableSource.ImageKallsyms, decoded.Source);
        Assert.Equal(booted.Symbols.Count, decoded.Symbols.Count);
        var first = Enumerable.Range(0, booted.Symbols.Count)
            .FirstOrDefault(i => decoded.Symbols[i] != booted.Symbols[i], -1);
        Assert.True(first < 0, first < 0 ? "" : $"symbol {first}: decoded {decoded.Symbols[first]}, " +
            $"booted {booted.Symbols[first]}");
    }

    [Fact]
    public async Task An_image_with_two_tokens_swapped_in_its_token_table_is_refused_not_decoded_wrongly()
    {
        var (_, vmlinux) = await ImageAsync();
        var layout = ImageKallsyms.Read(VmlinuxImage.Parse(vmlinux)).Layout;
        var tokens = Enumerable.Range(0, 256).Select(i =>
        {
            var start = layout.TokenTable
                + BinaryPrimitives.ReadUInt16LittleEndian(vmlinux.AsSpan(layout.TokenIndex + 2 * i));
            return (Start: start, Length: vmlinux.AsSpan(start).IndexOf((byte)0));
        }).ToList();
        // Two multi-character tokens of one length trade places: every table keeps its shape and still agrees with
        // the others, but the names that use them change.
        var (a, b) = tokens.SelectMany((x, i) => tokens.Skip(i + 1)
            .Where(y => y.Length == x.Length && x.Length > 1
                && !vmlinux.AsSpan(x.Start, x.Length).SequenceEqual(vmlinux.AsSpan(y.Start, y.Length)))
            .Select(y => (x, y))).First();
        var damaged = vmlinux.ToArray();
        vmlinux.AsSpan(a.Start, a.Length).CopyTo(damaged.AsSpan(b.Start));
        vmlinux.AsSpan(b.Start, b.Length).CopyTo(damaged.AsSpan(a.Start));

        var refused = Assert.Throws<ImageKallsymsException>(() => ImageKallsyms.Read(VmlinuxImage.Parse(damaged)));

        Assert.Equal(ExitCode.InputRefused, refused.ExitCode);
    }

    [Fact]
    public async Task An_image_whose_token_table_is_overwritten_is_refused_saying_no_token_table_was_found()
    {
        var (_, vmlinux) = await ImageAsync();
        var layout = ImageKallsyms.Read(VmlinuxImage.Parse(vmlinux)).Layout;
        var damaged = vmlinux.ToArray();
        damaged.AsSpan(layout.TokenTable..layout.TokenIndex).Fill(0x5A);

        var refused = Assert.Throws<ImageKallsymsException>(() => ImageKallsyms.Read(VmlinuxImage.Parse(damaged)));

        Assert.Contains("no kallsyms token table", refused.Message, StringComparison.Ordinal);
    }
}

/// <summary>Debian 11's 5.10: the address offsets before the count, no name-sorted index.</summary>
[Collection("5.10 cloud kernel")]
public sealed class ImageKallsymsDebian11Specification() : ImageKallsymsSpecification(TestKernels.Debian11Cloud510);

/// <summary>Debian 12's 6.1: the name-sorted index between the markers and the token table.</summary>
[Collection("6.1 cloud kernel")]
public sealed class ImageKallsymsDebian12Specification() : ImageKallsymsSpecification(TestKernels.Debian12Cloud61);

/// <summary>Debian 12's 6.12 backport: the count first, the address offsets after the token index.</summary>
[Collection("6.12 cloud kernel")]
public sealed class ImageKallsymsBackportSpecification() : ImageKallsymsSpecification(TestKernels.Debian12Cloud612);

/// <summary>Debian 13's 6.12, built with gcc-14 and IBT.</summary>
[Collection("Debian 13 6.12 cloud kernel")]
public sealed class ImageKallsymsDebian13Specification() : ImageKallsymsSpecification(TestKernels.Debian13Cloud612);
