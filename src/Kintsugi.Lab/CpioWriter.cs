using System.Text;

namespace Kintsugi.Lab;

/// <summary>Writes the "newc" cpio format the kernel unpacks as an initramfs.</summary>
public sealed class CpioWriter(Stream output)
{
    private int _inode = 1;
    private readonly HashSet<string> _directories = new(StringComparer.Ordinal);

    public void Directory(string path, int mode = 0x1ED /* 0755 */)
    {
        path = Normalize(path);
        if (path.Length == 0 || !_directories.Add(path)) return;
        var parent = System.IO.Path.GetDirectoryName(path);
        if (!string.IsNullOrEmpty(parent)) Directory(parent);
        Entry(path, 0x4000 | mode, [], 2);
    }

    public void File(string path, ReadOnlySpan<byte> contents, int mode = 0x1A4 /* 0644 */)
    {
        path = Normalize(path);
        EnsureParent(path);
        Entry(path, 0x8000 | mode, contents, 1);
    }

    public void Symlink(string path, string target)
    {
        path = Normalize(path);
        EnsureParent(path);
        Entry(path, 0xA000 | 0x1FF, Encoding.UTF8.GetBytes(target), 1);
    }

    public void CharacterDevice(string path, int major, int minor, int mode = 0x180 /* 0600 */)
    {
        path = Normalize(path);
        EnsureParent(path);
        Entry(path, 0x2000 | mode, [], 1, major, minor);
    }

    /// <summary>Writes the trailer; the archive is complete after this.</summary>
    public void Finish()
    {
        Entry("TRAILER!!!", 0, [], 1, inode: 0);
        output.Flush();
    }

    private void EnsureParent(string path)
    {
        var parent = System.IO.Path.GetDirectoryName(path);
        if (!string.IsNullOrEmpty(parent)) Directory(parent);
    }

    private static string Normalize(string path) => path.Trim('/');

    private void Entry(string name, int mode, ReadOnlySpan<byte> data, int links, int major = 0, int minor = 0,
        int? inode = null)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name + "\0");
        var header = $"070701{inode ?? _inode++:X8}{mode:X8}{0:X8}{0:X8}{links:X8}{0:X8}{data.Length:X8}{0:X8}{0:X8}" +
            $"{major:X8}{minor:X8}{nameBytes.Length:X8}{0:X8}";
        output.Write(Encoding.ASCII.GetBytes(header));
        output.Write(nameBytes);
        Pad(110 + nameBytes.Length);
        output.Write(data);
        Pad(data.Length);
    }

    private void Pad(int length)
    {
        var padding = (4 - length % 4) % 4;
        for (var i = 0; i < padding; i++) output.WriteByte(0);
    }
}
