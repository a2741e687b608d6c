namespace Kintsugi.Diff.Tests.Kernel;

/// <summary>The edits of real units the pair specifications diff.</summary>
public static class KernelEdits
{
    public static IReadOnlyList<KernelEdit> All => [];
}
