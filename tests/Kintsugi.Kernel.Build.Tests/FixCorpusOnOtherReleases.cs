using Kintsugi.Testing;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>The fix corpus on Debian 13's 6.12 (gcc-14, IBT), built in its release's build root.</summary>
public sealed class FixCorpusRun613() : FixCorpusRun(TestKernels.Debian13Cloud612);

[Collection("Debian 13 6.12 cloud kernel")]
public sealed class FixCorpusOnDebian13(FixCorpusRun613 run) : FixCorpusSpecification<FixCorpusRun613>(run), IClassFixture<FixCorpusRun613>
{
    protected override KernelRelease Release => TestKernels.Debian13Cloud612;
}

/// <summary>The fix corpus on Debian 11's 5.10 (gcc-10, no IBT), built in its release's build root; fix-5.10.patch where 5.10's source differs.</summary>
public sealed class FixCorpusRun510() : FixCorpusRun(TestKernels.Debian11Cloud510);

[Collection("5.10 cloud kernel")]
public sealed class FixCorpusOnDebian11(FixCorpusRun510 run) : FixCorpusSpecification<FixCorpusRun510>(run), IClassFixture<FixCorpusRun510>
{
    protected override KernelRelease Release => TestKernels.Debian11Cloud510;
}
