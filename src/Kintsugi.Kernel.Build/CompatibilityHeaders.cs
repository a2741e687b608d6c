namespace Kintsugi.Kernel.Build;

/// <summary>kpatch's macro headers (callbacks, shadow variables, syscalls), which fixes written for kpatch
/// include.</summary>
internal static class CompatibilityHeaders
{
    private static readonly string[] Names = ["kpatch-macros.h", "kpatch-syscall.h"];

    public static void Write(string directory)
    {
        Directory.CreateDirectory(directory);
        var assembly = typeof(CompatibilityHeaders).Assembly;
        foreach (var header in Names)
        {
            using var stream = assembly.GetManifestResourceStream($"Kintsugi.Kernel.Build.Compat.{header}")
                ?? throw new InvalidOperationException($"the builder was built without its {header} resource");
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            var path = Path.Combine(directory, header);
            // Rewriting an unchanged header would only make kbuild think every cached object is stale.
            if (File.Exists(path) && File.ReadAllBytes(path).AsSpan().SequenceEqual(memory.ToArray())) continue;
            File.WriteAllBytes(path + ".new", memory.ToArray());
            File.Move(path + ".new", path, overwrite: true);
        }
    }
}
