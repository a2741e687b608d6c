using System.Runtime.InteropServices;
using Kintsugi.Bundles;

namespace Kintsugi.Server.Storage;

/// <summary>
/// Bundles by the SHA-256 of their bytes, on disk under <c>bundles/ab/abcd…</c>. Content addressing makes a
/// stored bundle immutable and lets any cache serve it. On PostgreSQL the bytes are also kept in the
/// database, so a replica that has never seen a bundle fills its own disk store on first request:
/// replicas share nothing but the database.
/// </summary>
public sealed class BundleStore(string directory, Database db)
{
    public string Directory { get; } = directory;

    public string PathOf(Sha256Digest digest)
    {
        var hex = digest.ToString();
        return Path.Combine(Directory, hex[..2], hex);
    }

    /// <summary>Stores the bytes (idempotent; a file whose contents do not match its name is replaced).</summary>
    public async Task PutAsync(Sha256Digest digest, ReadOnlyMemory<byte> bytes,
        System.Data.Common.DbConnection connection, System.Data.Common.DbTransaction transaction)
    {
        if (Sha256Digest.Of(bytes.Span) != digest) throw new ArgumentException("the bytes do not match their digest",
            nameof(bytes));
        WriteFile(digest, bytes.Span);
        if (db.Dialect == Dialect.Postgres)
            await connection.ExecuteAsync(transaction,
                "INSERT INTO bundle_blobs (sha256, content) VALUES (@s, @c) ON CONFLICT (sha256) DO NOTHING",
                ("@s", digest.ToString()), ("@c", WholeArray(bytes)));
    }

    /// <summary>The array behind <paramref name="bytes"/> when they are all of it (a bundle's own bytes), else a
    /// copy: the database driver takes arrays.</summary>
    private static byte[] WholeArray(ReadOnlyMemory<byte> bytes) =>
        MemoryMarshal.TryGetArray(bytes, out var segment) && segment.Offset == 0
        && segment.Count == segment.Array!.Length ? segment.Array : bytes.ToArray();

    /// <summary>The path of the stored bundle, or null when no bundle has that digest.</summary>
    public async Task<string?> FindAsync(Sha256Digest digest, CancellationToken cancellation = default)
    {
        var path = PathOf(digest);
        if (File.Exists(path)) return path;
        if (db.Dialect != Dialect.Postgres) return null;
        await using var connection = await db.OpenAsync(cancellation);
        if (await connection.ScalarAsync(null, "SELECT content FROM bundle_blobs WHERE sha256 = @s",
            ("@s", digest.ToString())) is not byte[] bytes) return null;
        if (Sha256Digest.Of(bytes) != digest) throw new StorageException($"the stored bytes of bundle {digest} do " +
            $"not match its digest: the database was altered");
        WriteFile(digest, bytes);
        return path;
    }

    private void WriteFile(Sha256Digest digest, ReadOnlySpan<byte> bytes)
    {
        var path = PathOf(digest);
        if (File.Exists(path) && Sha256Digest.Of(File.ReadAllBytes(path)) == digest) return;
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var temporary = $"{path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write))
        {
            stream.Write(bytes);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
    }
}
