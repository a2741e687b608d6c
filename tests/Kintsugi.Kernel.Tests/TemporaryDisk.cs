namespace Kintsugi.Kernel.Tests;

/// <summary>A lab disk image that lives for one test (the lab formats it on first boot).</summary>
internal sealed class TemporaryDisk : IDisposable
{
    public string Path { get; } =
        System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"kintsugi-disk-{Guid.NewGuid():N}.img");

    public void Dispose() => File.Delete(Path);
}
