namespace Kintsugi.Testing;

/// <summary>The distribution kernels the suite proves behaviour on: one of each supported line.</summary>
public static class TestKernels
{
    public static readonly KernelRelease Debian12Cloud61 = KernelRelease.Parse("6.1.0-56-cloud-amd64");
    public static readonly KernelRelease Debian12Cloud612 = KernelRelease.Parse("6.12.117+deb12-cloud-amd64");
    /// <summary>Debian 11's 5.10 line, built with gcc-10 (Debian 10.2.1-6): compiled in a Debian 11 build
    /// root.</summary>
    public static readonly KernelRelease Debian11Cloud510 = KernelRelease.Parse("5.10.0-46-cloud-amd64");
    /// <summary>Debian 13's 6.12 line, built with gcc-14 and IBT: compiled in a Debian 13 build root.</summary>
    public static readonly KernelRelease Debian13Cloud612 = KernelRelease.Parse("6.12.117+deb13-cloud-amd64");
    /// <summary>An older ABI of the 6.1 line, whose kbuild package has left the archive.</summary>
    public static readonly KernelRelease Debian12Cloud61Older = KernelRelease.Parse("6.1.0-47-cloud-amd64");
}
