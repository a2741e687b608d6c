namespace Kintsugi.Kernel;

/// <summary>Writes that survive a crash or power loss midway: the old contents or the new, never half.</summary>
public static class AtomicFile
{
    public static void Write(string path, ReadOnlySpan<byte> contents)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        // Unique per writer, so that two threads writing the same file each rename a whole file of their own.
        var temporary = $"{path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            stream.Write(contents);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    public static void WriteText(string path, string contents) =>
        Write(path, System.Text.Encoding.UTF8.GetBytes(contents));

    /// <summary>
    /// A secret (a credential, a token) followed by a newline, readable and writable by its owner only from the
    /// moment it exists: never world-readable, not even briefly.
    /// </summary>
    public static void WriteSecret(string path, string secret)
    {
        var temporary = path + ".tmp";
        File.Delete(temporary);
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode =
                UnixFileMode.UserRead | UnixFileMode.UserWrite,
        };
        using (var stream = new FileStream(temporary, options))
        {
            stream.Write(System.Text.Encoding.UTF8.GetBytes(secret + "\n"));
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        SyncDirectory(Path.GetDirectoryName(path)!);
    }

    public static void Copy(string source, string destination) => Write(destination, File.ReadAllBytes(source));

    /// <summary>Makes a rename durable: without it the directory entry may be lost with the power.</summary>
    public static void SyncDirectory(string directory)
    {
        // Found by cutting the power in the lab: without this, a rename made just before was lost and the
        // previous record came back. (File.OpenHandle refuses directories, so this goes through libc.)
        // EINVAL: the filesystem cannot fsync directories; the rename itself has happened.
        var errno = Native.SyncDirectory(directory);
        if (errno is not (0 or 22))
            throw new IOException($"cannot make the change in {directory} durable (fsync: " +
                $"{Native.ErrnoMessage(errno)})");
    }
}
