using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Server.Fleet;
using Kintsugi.Server.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;

namespace Kintsugi.Server.Api;

/// <summary>
/// Air-gap transfer: <c>GET /api/v1/export</c> writes a tar of the good releases' bundles, the newest signed
/// release metadata of each build (<c>metadata/BUILD.json</c>) and an index that also lists the revoked releases;
/// <c>POST /api/v1/import</c> publishes each bundle into this server (it must verify against this server's own
/// trusted keys, like any publish), stores the metadata (only forward; the releases it revokes are revoked) and
/// revokes here the releases the exporting server had revoked. Rollout state does not travel: imported releases
/// enter this server's first channel. An import is spooled to disk as it arrives, one bundle in memory at a time.
/// </summary>
public static class TransferApi
{
    public const string IndexName = "kintsugi-export.json";
    public const string Format = "kintsugi-export-v1";
    public const long MaxImportBytes = 2L * 1024 * 1024 * 1024;
    private const string BundlePrefix = "bundles/";
    private const string MetadataPrefix = "metadata/";
    private const int MaxDocumentBytes = 1024 * 1024;

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/api/v1/export", async (HttpContext context, Releases releases, BundleStore store, Database db) =>
        {
            await Http.RequireAsync(context, Role.Operator);
            var build = Http.Query(context, "build");
            if (build.Length > 0
                && !BuildId.TryParse(build, out _)) throw ApiProblem.BadRequest($"'{build}' is not a build-id");
            var list = (await releases.ListAsync(build.Length == 0 ? null : build.ToLowerInvariant(),
                includeRevoked: true))
                .OrderBy(r => r.BuildId, StringComparer.Ordinal).ThenBy(r => r.Level).ToList();
            var paths = new List<(ReleaseView Release, string Path)>();
            foreach (var r in list.Where(r => r.Revoked is null))
                paths.Add((r, await store.FindAsync(Sha256Digest.Parse(r.Bundle), context.RequestAborted)
                    ?? throw new StorageException($"bundle {r.Bundle} of release {r.Id} is missing from the bundle " +
                        $"store {store.Directory}")));
            var metadata = new List<(string Build, string Text)>();
            await using (var connection = await db.OpenAsync(context.RequestAborted))
                foreach (var b in list.Select(r => r.BuildId).Distinct())
                    if (await Releases.MetadataTextAsync(connection, b, context.RequestAborted) is { } text)
                        metadata.Add((b, text));
            var index = new ExportIndex(Format, ServerApp.Version, DateTimeOffset.UtcNow,
                [.. list.Select(r =>
                    new ExportedRelease(r.Id, r.KernelRelease, r.BuildId, r.Level, r.Bundle, r.Size,
                    [.. r.Channels.Select(c => c.Channel)], r.Revoked, r.Kind, r.Object))]);
            context.Response.ContentType = "application/x-tar";
            context.Response.Headers.ContentDisposition = "attachment; filename=\"kintsugi-export.tar\"";
            // Tar needs a seekable-free writer: buffer nothing but one entry at a time.
            await using var tar = new TarWriter(context.Response.BodyWriter.AsStream(), TarEntryFormat.Pax,
                leaveOpen: true);
            var indexBytes = JsonSerializer.SerializeToUtf8Bytes(index, OperatorJson.Default.ExportIndex);
            await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.RegularFile, IndexName)
            { DataStream = new MemoryStream(indexBytes) }, context.RequestAborted);
            foreach (var (b, text) in metadata)
                await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.RegularFile, $"{MetadataPrefix}{b}.json")
                { DataStream = new MemoryStream(Encoding.UTF8.GetBytes(text)) }, context.RequestAborted);
            foreach (var (r, path) in paths)
            {
                await using var data = File.OpenRead(path);
                await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.RegularFile, $"{BundlePrefix}{r.Bundle}")
                { DataStream = data }, context.RequestAborted);
            }
        }).Produces(StatusCodes.Status200OK, contentType: "application/x-tar")
          .Query("build", "only the releases for this build-id (hex; a kernel's or a user-space object's)")
          .Describe("Export good releases, their builds' signed release metadata and the revoked releases as a tar " +
                    "(air-gap)", Role.Operator);

        app.MapPost("/api/v1/import", async (HttpContext context, Releases releases, ServerOptions options) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            // An import may be far larger than the server's request limit (one bundle); it is spooled, not held.
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
                limit.MaxRequestBodySize = MaxImportBytes + MaxDocumentBytes;
            var actor = who.Actor with { Name = who.Actor.Name + " via import" };
            var spool = Path.Combine(options.DataDirectory, $"import-{Guid.NewGuid():N}");
            OwnerOnly.CreateDirectory(spool);
            try
            {
                var archive = await ReceiveAsync(context, spool);
                var results = await PublishBundlesAsync(archive, spool, releases, actor);
                var metadata = await StoreMetadataAsync(archive, releases, actor);
                var revoked = await RevokeAsync(archive, releases, actor);
                return new ImportResult(results.Count(r => r.Created),
                    results.Count(r => r.Refused is null && !r.Created),
                    results.Count(r => r.Refused is not null), results, metadata, revoked);
            }
            finally { Directory.Delete(spool, recursive: true); }
        }).Body<byte[]>("application/x-tar")
          .Describe("Import an export tar: each bundle must verify against this server's keys; signed release " +
                    "metadata is stored (forward only) and the exporting server's revocations are applied",
                    Role.Operator);
    }

    /// <summary>What arrived: the index, the metadata documents, and the bundles' digests (their bytes are in the
    /// spool directory, each checked against its name).</summary>
    private sealed record Archive(ExportIndex Index, IReadOnlyList<string> Metadata, IReadOnlySet<string> Bundles);

    private static async Task<Archive> ReceiveAsync(HttpContext context, string spool)
    {
        ExportIndex? index = null;
        var metadata = new List<string>();
        var bundles = new HashSet<string>(StringComparer.Ordinal);
        long total = 0;
        var cancellation = context.RequestAborted;
        try
        {
            await using var reader = new TarReader(context.Request.Body, leaveOpen: true);
            while (await reader.GetNextEntryAsync(copyData: false, cancellation) is { } entry)
            {
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
                if (entry.Length > Bundle.MaxLength) throw ApiProblem.BadRequest($"{entry.Name} is larger than a " +
                    $"bundle can be");
                total += entry.Length;
                if (total > MaxImportBytes) throw new ApiProblem(413, "request too large",
                    $"an import is at most {MaxImportBytes} bytes");
                if (entry.Name == IndexName)
                {
                    try
                    {
                        index = JsonSerializer.Deserialize(await SmallAsync(entry, cancellation),
                            OperatorJson.Default.ExportIndex);
                    }
                    catch (JsonException e) { throw ApiProblem.BadRequest($"{IndexName} is not valid: {e.Message}"); }
                }
                else if (entry.Name.StartsWith(MetadataPrefix, StringComparison.Ordinal))
                    metadata.Add(Encoding.UTF8.GetString(await SmallAsync(entry, cancellation)));
                else if (entry.Name.StartsWith(BundlePrefix, StringComparison.Ordinal))
                {
                    var name = entry.Name[BundlePrefix.Length..];
                    if (name.Length != 64 || !name.All(char.IsAsciiHexDigitLower))
                        throw ApiProblem.BadRequest($"{entry.Name} is not named by a SHA-256");
                    if (await SpoolAsync(entry, Path.Combine(spool, name), cancellation) != name)
                        throw ApiProblem.BadRequest($"{entry.Name} does not match its SHA-256: the export was " +
                            $"altered or damaged");
                    bundles.Add(name);
                }
            }
        }
        catch (InvalidDataException e) { throw ApiProblem.BadRequest($"not a Kintsugi export (tar): {e.Message}"); }
        if (index is null
            || index.Format != Format) throw ApiProblem.BadRequest($"not a Kintsugi export: {IndexName} with " +
            $"format {Format} is missing");
        return new Archive(index, metadata, bundles);
    }

    private static async Task<byte[]> SmallAsync(TarEntry entry, CancellationToken cancellation)
    {
        if (entry.Length > MaxDocumentBytes)
            throw ApiProblem.BadRequest($"{entry.Name} is larger than {MaxDocumentBytes} bytes");
        using var buffer = new MemoryStream();
        if (entry.DataStream is not null) await entry.DataStream.CopyToAsync(buffer, cancellation);
        return buffer.ToArray();
    }

    /// <summary>Copies an entry to <paramref name="path"/>, hashing as it goes; returns its SHA-256 (hex).</summary>
    private static async Task<string> SpoolAsync(TarEntry entry, string path, CancellationToken cancellation)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        options.UnixCreateMode = OwnerOnly.FileMode;
        await using var file = new FileStream(path, options);
        if (entry.DataStream is { } data)
        {
            var buffer = new byte[81920];
            int read;
            while ((read = await data.ReadAsync(buffer, cancellation)) > 0)
            {
                hash.AppendData(buffer, 0, read);
                await file.WriteAsync(buffer.AsMemory(0, read), cancellation);
            }
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    private static async Task<List<ImportedRelease>>
        PublishBundlesAsync(Archive archive, string spool, Releases releases,
        Storage.Actor actor)
    {
        var results = new List<ImportedRelease>();
        foreach (var r in archive.Index.Releases.Where(r => r.Revoked is null)
            .OrderBy(r => r.BuildId, StringComparer.Ordinal).ThenBy(r => r.Level))
        {
            if (!archive.Bundles.Contains(r.Bundle))
            {
                results.Add(new ImportedRelease(r.Bundle, null, false, "the bundle is listed but not in the archive"));
                continue;
            }
            try
            {
                // Straight from the spooled file into one array: the only copy of the bundle this import holds.
                var published = await releases.PublishAsync(Bundle.ReadFile(Path.Combine(spool, r.Bundle)), actor);
                results.Add(new ImportedRelease(r.Bundle, published.Release.Id, published.Created, null));
            }
            catch (BundleException e)
            {
                results.Add(new ImportedRelease(r.Bundle, null, false, $"not a valid bundle: {e.Message}"));
            }
            catch (FleetException e) { results.Add(new ImportedRelease(r.Bundle, null, false, e.Message)); }
        }
        return results;
    }

    /// <summary>Each build's signed metadata, stored when it is newer than this server's (never older).</summary>
    private static async Task<List<ImportedMetadata>>
        StoreMetadataAsync(Archive archive, Releases releases, Storage.Actor actor)
    {
        var results = new List<ImportedMetadata>();
        foreach (var text in archive.Metadata)
        {
            string build; long version;
            try
            {
                var signed = SignedReleaseMetadata.Read(text);
                (build, version) = (signed.Metadata.BuildId.ToString(), signed.Metadata.Version);
            }
            catch (BundleException e)
            {
                results.Add(new ImportedMetadata("", 0, false, $"not valid release metadata: {e.Message}"));
                continue;
            }
            try
            {
                var (_, created) = await releases.PublishMetadataAsync(text, actor);
                results.Add(new ImportedMetadata(build, version, created, null));
            }
            catch (FleetException e) { results.Add(new ImportedMetadata(build, version, false, e.Message)); }
        }
        return results;
    }

    /// <summary>The exporting server's revocations, applied to the same bundles here; returns how many were
    /// new.</summary>
    private static async Task<int> RevokeAsync(Archive archive, Releases releases, Storage.Actor actor)
    {
        var revoked = 0;
        foreach (var r in archive.Index.Releases.Where(r => r.Revoked is not null))
        {
            ReleaseView here;
            try { here = await releases.GetAsync(r.Bundle); }
            catch (FleetException) { continue; } // never here: nothing to revoke (and a revoked bundle is not exported)
            if (here.Revoked is not null) continue;
            var reason = $"revoked on the exporting server: {r.Revoked!.Reason}";
            await releases.RevokeAsync(here.Id, new RevokeRequest(reason.Length > 512 ? reason[..512] : reason), actor);
            revoked++;
        }
        return revoked;
    }
}
