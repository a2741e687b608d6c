namespace Kintsugi.Kernel.Build.Units;

/// <summary>
/// What the target kernel makes of one C file of its source: the units that compile it, a proof that none
/// does, or an honest "cannot tell". "Not built" decides that a security fix is skipped, so it is never
/// given without the proof that a user or a reviewer can check against the tree and its .config.
/// </summary>
public abstract record UnitResolution(string SourcePath)
{
    /// <summary>
    /// The file is compiled into the kernel: as its own unit, or #included into other units (then each of
    /// those is listed). Every unit names the object kbuild links it into (vmlinux or a module).
    /// </summary>
    public sealed record Built(string SourcePath, IReadOnlyList<TranslationUnit> Units) : UnitResolution(SourcePath)
    {
        public override string ToString() =>
            $"{SourcePath}: built, {string.Join(", ", Units.Select(u => $"{u.ObjectPath} in {u.PatchedObject}"))}";
    }

    /// <summary>The file is not compiled into this kernel (vmlinux or any module), and why.</summary>
    public sealed record NotBuilt(string SourcePath, NotBuiltProof Proof) : UnitResolution(SourcePath)
    {
        public override string ToString() => $"{SourcePath}: not built in this kernel: {Proof}";
    }

    /// <summary>The resolver cannot tell whether the file is built; a build must refuse rather than skip it.</summary>
    public sealed record Unresolved(string SourcePath, string Reason) : UnitResolution(SourcePath)
    {
        public override string ToString() => $"{SourcePath}: cannot tell whether it is built: {Reason}";
    }
}

/// <summary>
/// What a changed header is compiled into: <see cref="Resolution"/> is built (the units), not built (the proof)
/// or unresolved, over the <see cref="Includers"/> C files that #include it. <see cref="Partial"/> when resolution
/// stopped past a limit of units: the units are then only the first ones found.
/// </summary>
public sealed record HeaderResolution(string HeaderPath, int Includers, UnitResolution Resolution, bool Partial)
{
    public IReadOnlyList<TranslationUnit> Units => Resolution is UnitResolution.Built built ? built.Units : [];
}

/// <summary>How a "not built" verdict was reached.</summary>
public enum NotBuiltReason
{
    /// <summary>The file is under another architecture's directory; kbuild descends only into arch/x86.</summary>
    OtherArchitecture,
    /// <summary>The file is outside the directories kbuild builds the kernel from (tools/, scripts/, samples/
    /// ...).</summary>
    OutsideKernelBuild,
    /// <summary>A directory on the way to the file is not descended into with this .config.</summary>
    DirectoryNotBuilt,
    /// <summary>No object list of the enclosing Makefiles, as kbuild evaluates them with this .config, holds the
    /// object.</summary>
    ObjectNotListed,
    /// <summary>The file is no unit of its own and every unit that #includes it is not built.</summary>
    IncludersNotBuilt,
}

/// <summary>
/// The evidence for a "not built" verdict: the reason, a sentence saying it, and the Makefile lines and
/// configuration symbols it rests on (each <c>CONFIG_X=value</c>, "is not set" when absent from .config).
/// </summary>
public sealed record NotBuiltProof(NotBuiltReason Reason, string Statement, IReadOnlyList<string> Evidence)
{
    public override string ToString() =>
        Evidence.Count == 0 ? Statement : $"{Statement} ({string.Join("; ", Evidence)})";
}
