using Kintsugi.Testing;

namespace Kintsugi.Kernel.Tests;

/// <summary>A lab disk image that lives for one test (the lab formats it on first boot).</summary>
internal sealed class TemporaryDisk : IDisposable
{
    private readonly TemporaryDirectory _directory = new();

    public string Path => _directory["disk.img"];

    public void Dispose() => _directory.Dispose();
}
