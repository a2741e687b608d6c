using Kintsugi.Lab;

namespace Kintsugi.Testing;

/// <summary>Files a lab test writes for its guest, each put at /inputs/NAME there; deleted when the test
/// ends.</summary>
public sealed class GuestInputs : IDisposable
{
    private readonly TemporaryDirectory _directory = new();

    /// <summary>The host path of an input (or of any other file of the test's, kept beside them).</summary>
    public string this[string name] => _directory[name];

    public GuestFile Add(string name, byte[] bytes)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(this[name])!);
        File.WriteAllBytes(this[name], bytes);
        return new GuestFile(this[name], "/inputs/" + name);
    }

    public GuestFile Add(string name, string text) => Add(name, System.Text.Encoding.UTF8.GetBytes(text));

    public void Dispose() => _directory.Dispose();
}
