namespace Kintsugi.Testing;

/// <summary>A directory for one test's files, deleted when the test ends.</summary>
public sealed class TemporaryDirectory : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("kintsugi-test-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string this[string name] => File(name);

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}
