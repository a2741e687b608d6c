namespace Kintsugi;

/// <summary>
/// Files and directories only their owner may read (keys, tokens, the server's data), created with that mode:
/// never world-readable, not even between a create and a chmod.
/// </summary>
public static class OwnerOnly
{
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    public const UnixFileMode DirectoryMode = FileMode | UnixFileMode.UserExecute;

    /// <summary>Creates the directory (and missing parents) 0700; one that exists keeps its mode.</summary>
    public static void CreateDirectory(string path) => Directory.CreateDirectory(path, DirectoryMode);

    /// <summary>Writes <paramref name="contents"/> to a new 0600 file beside <paramref name="path"/>, then renames it
    /// over <paramref name="path"/>: readers see the old file or the whole new one. <paramref name="durable"/>: on disk
    /// before the rename (false where losing the newest contents in a power cut is harmless).</summary>
    public static void Write(string path, ReadOnlySpan<byte> contents, bool durable = true)
    {
        var temporary = path + ".tmp-" + Environment.ProcessId;
        File.Delete(temporary);
        var options = new FileStreamOptions
        {
            Mode = System.IO.FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = FileMode,
        };
        using (var stream = new FileStream(temporary, options))
        {
            stream.Write(contents);
            stream.Flush(flushToDisk: durable);
        }
        File.Move(temporary, path, overwrite: true);
    }

    public static void WriteText(string path, string contents, bool durable = true) =>
        Write(path, System.Text.Encoding.UTF8.GetBytes(contents), durable);
}
