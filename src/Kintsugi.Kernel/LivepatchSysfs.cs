namespace Kintsugi.Kernel;

/// <summary>Reads the kernel's livepatch interface under /sys/kernel/livepatch.</summary>
public static class LivepatchSysfs
{
    public const string Root = "/sys/kernel/livepatch";

    public static IReadOnlyList<LoadedPatch> List()
    {
        if (!Directory.Exists(Root)) return [];
        var patches = new List<LoadedPatch>();
        foreach (var dir in Directory.GetDirectories(Root).Order(StringComparer.Ordinal))
            if (TryRead(ModuleName.Parse(Path.GetFileName(dir))) is { } patch)
                patches.Add(patch);
        return patches;
    }

    /// <summary>Reads one patch; null when the kernel does not (or no longer) list it.</summary>
    public static LoadedPatch? TryRead(ModuleName name)
    {
        var dir = PatchDirectory(name);
        try
        {
            var objects = new List<PatchedObject>();
            foreach (var objectDir in Directory.GetDirectories(dir).Order(StringComparer.Ordinal))
            {
                var functions = Directory.GetDirectories(objectDir)
                    .Select(f => PatchedFunction.Parse(Path.GetFileName(f)))
                    .OrderBy(f => f.Name, StringComparer.Ordinal).ToList();
                var patchedFile = Path.Combine(objectDir, "patched");
                bool? patched = File.Exists(patchedFile) ? ReadFlag(patchedFile) : null;
                objects.Add(new PatchedObject(Path.GetFileName(objectDir), patched, functions));
            }
            var replaceFile = Path.Combine(dir, "replace");
            return new LoadedPatch(
                name,
                Enabled: ReadFlag(Path.Combine(dir, "enabled")),
                InTransition: ReadFlag(Path.Combine(dir, "transition")),
                Replace: File.Exists(replaceFile) ? ReadFlag(replaceFile) : null,
                objects);
        }
        // The kernel removes a patch's directory once the patch is freed; an attribute read while that
        // happens fails with ENOENT or ENODEV. Either way the patch is no longer listed.
        catch (IOException) when (!Directory.Exists(dir) || IsVanishing(dir)) { return null; }
    }

    private static bool IsVanishing(string dir)
    {
        try { _ = File.ReadAllText(Path.Combine(dir, "enabled")); return false; }
        catch (IOException) { return true; }
    }

    public static string PatchDirectory(ModuleName name) => Path.Combine(Root, name.Value);

    internal static bool ReadFlag(string path) => File.ReadAllText(path).Trim() == "1";
}

/// <summary>A livepatch the kernel lists under /sys/kernel/livepatch.</summary>
public sealed record
    LoadedPatch(ModuleName Name, bool Enabled, bool InTransition, bool? Replace, IReadOnlyList<PatchedObject> Objects);

/// <summary>An object a patch changes: <c>vmlinux</c> or a module name; Patched is null on kernels without the
/// attribute.</summary>
public sealed record PatchedObject(string Name, bool? Patched, IReadOnlyList<PatchedFunction> Functions);

/// <summary>A function a patch replaces, with its position among same-named symbols (0: unique).</summary>
public sealed record PatchedFunction(string Name, int Sympos)
{
    public static PatchedFunction Parse(string directoryName)
    {
        var comma = directoryName.LastIndexOf(',');
        return comma > 0 && int.TryParse(directoryName[(comma + 1)..], out var pos)
            ? new PatchedFunction(directoryName[..comma], pos)
            : new PatchedFunction(directoryName, 0);
    }
}
