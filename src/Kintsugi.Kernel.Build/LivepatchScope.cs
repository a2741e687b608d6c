namespace Kintsugi.Kernel.Build;

/// <summary>What a changed file means for a livepatch.</summary>
public enum ChangeScope
{
    /// <summary>A C file: its translation unit is compiled before and after.</summary>
    TranslationUnit,
    /// <summary>A header: every unit that includes it must be rebuilt.</summary>
    Header,
    /// <summary>No code of the running kernel (documentation, user-space tools, samples).</summary>
    Ignored,
    /// <summary>Cannot be live patched; the reason says why.</summary>
    Refused,
}

public sealed record ScopedChange(FileChange Change, ChangeScope Scope, string Reason);

/// <summary>Decides, before anything is compiled, which changed files a livepatch can carry.</summary>
public static class LivepatchScope
{
    public static ScopedChange Classify(FileChange change)
    {
        var path = change.Path;
        var file = Path.GetFileName(path);
        if (path.StartsWith("Documentation/", StringComparison.Ordinal)
            || path.StartsWith("tools/", StringComparison.Ordinal)
            || path.StartsWith("samples/", StringComparison.Ordinal) || file.EndsWith(".rst", StringComparison.Ordinal)
            || file.EndsWith(".txt", StringComparison.Ordinal))
            return new(change, ChangeScope.Ignored, "not code of the running kernel");
        if (path.StartsWith("arch/x86/boot/", StringComparison.Ordinal)
            || path.StartsWith("arch/x86/realmode/", StringComparison.Ordinal))
            return new(change, ChangeScope.Refused,
                "part of the boot image outside the kernel proper, which runs only before the kernel starts");
        if (file.EndsWith(".lds", StringComparison.Ordinal) || file.EndsWith(".lds.S", StringComparison.Ordinal))
            return new(change, ChangeScope.Refused, "a linker script: the running kernel's layout cannot change");
        if (file.EndsWith(".S", StringComparison.Ordinal) || file.EndsWith(".s", StringComparison.Ordinal))
            return new(change, ChangeScope.Refused, "assembly: livepatching replaces C functions through their " +
                "ftrace entry; rewrite the fix in the C callers, or reboot");
        if (file is "Makefile" or "Kbuild" || file.StartsWith("Kconfig", StringComparison.Ordinal))
            return new(change, ChangeScope.Refused,
                "a build or configuration change: the running kernel was built with the old one");
        if (path.StartsWith("scripts/", StringComparison.Ordinal))
            return new(change, ChangeScope.Refused,
                "a build script: it does not run in the kernel, and changing it changes how everything else builds");
        if (change.Kind == FileChangeKind.Deleted)
            return new(change, ChangeScope.Refused,
                "deletes a file: a livepatch can replace functions, not remove a translation unit");
        if (file.EndsWith(".c", StringComparison.Ordinal)) return new(change, ChangeScope.TranslationUnit, "");
        if (file.EndsWith(".h", StringComparison.Ordinal)) return new(change, ChangeScope.Header, "");
        return new(change, ChangeScope.Refused, "not C source or a header");
    }

    /// <summary>Classifies every file; throws, naming each refused file and why, when any cannot be live
    /// patched.</summary>
    public static IReadOnlyList<ScopedChange> Check(IEnumerable<SourcePatch> patches)
    {
        var scoped = patches.SelectMany(p => p.Files).Select(Classify).ToList();
        var refused = scoped.Where(s => s.Scope == ChangeScope.Refused).ToList();
        if (refused.Count > 0)
            throw new SourcePatchException("this fix cannot be live patched:\n"
                + string.Join("\n", refused.Select(r => $"  {r.Change.Path}: {r.Reason}")));
        if (scoped.All(s => s.Scope == ChangeScope.Ignored))
            throw new SourcePatchException("this fix changes no kernel code (only documentation, tools or samples): " +
                "there is nothing to live patch");
        return scoped;
    }
}
