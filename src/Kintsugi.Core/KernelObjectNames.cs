namespace Kintsugi;

/// <summary>
/// How the kernel names the objects code is linked into: <c>vmlinux</c>, or a module under the name it is loaded
/// as. Both sides use it: the builder names patched objects, the machine names loaded modules.
/// </summary>
public static class KernelObjectNames
{
    /// <summary>The kernel image's own object.</summary>
    public const string Vmlinux = "vmlinux";

    /// <summary>A module's name as the kernel knows it: '-' and '_' are the same character, written '_'.</summary>
    public static string Normalize(string moduleName) => moduleName.Replace('-', '_');

    /// <summary>The name a module file is loaded as: the file name without <c>.ko</c> (and compression),
    /// normalized.</summary>
    public static string ModuleOf(string path)
    {
        var name = Path.GetFileName(path.Trim());
        foreach (var suffix in new[] { ".xz", ".zst", ".gz" })
            if (name.EndsWith(suffix, StringComparison.Ordinal)) name = name[..^suffix.Length];
        if (name.EndsWith(".ko", StringComparison.Ordinal)) name = name[..^3];
        return Normalize(name);
    }
}
