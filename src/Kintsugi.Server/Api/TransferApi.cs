using System.Formats.Tar;
using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Server.Fleet;
using Kintsugi.Server.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Kintsugi.Server.Api;

/// <summary>
/// Air-gap transfer: <c>GET /api/v1/export</c> writes a tar of the good (not revoked) releases'
/// bundles with an index; <c>POST /api/v1/import</c> publishes each bundle into this server, where it must
/// verify against this server's own trusted keys, like any publish. Rollout state does not travel: imported
/// releases enter this server's first channel.
/// </summary>
public static class TransferApi
{
    public const string IndexName = "kintsugi-export.json";
    public const string Format = "kintsugi-export-v1";
    public const long MaxImportBytes = 2L * 1024 * 1024 * 1024;

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/api/v1/export", async (HttpContext context, Releases releases, BundleStore store) =>
        {
            await Http.RequireAsync(context, Role.Operator);
            var build = context.Request.Query["build"].ToString();
            if (build.Length > 0
                && !BuildId.TryParse(build, out _)) throw ApiProblem.BadRequest($"'{build}' is not a build-id");
            var list = (await releases.ListAsync(build.Length == 0 ? null : build.ToLowerInvariant(),
                includeRevoked: false))
                .OrderBy(r => r.BuildId, StringComparer.Ordinal).ThenBy(r => r.Level).ToList();
            var paths = new List<(ReleaseView Release, string Path)>();
            foreach (var r in list)
                paths.Add((r, await store.FindAsync(Sha256Digest.Parse(r.Bundle), context.RequestAborted)
                    ?? throw new StorageException($"bundle {r.Bundle} of release {r.Id} is missing from the bundle " +
                        $"store {store.Directory}")));
            var index = new ExportIndex(Format, ServerApp.Version, DateTimeOffset.UtcNow,
                [.. list.Select(r =>
                    new ExportedRelease(r.Id, r.KernelRelease, r.BuildId, r.Level, r.Bundle, r.Size,
                    [.. r.Channels.Select(c => c.Channel)]))]);
            context.Response.ContentType = "application/x-tar";
            context.Response.Headers.ContentDisposition = "attachment; filename=\"kintsugi-export.tar\"";
            // Tar needs a seekable-free writer: buffer nothing but one entry at a time.
            await using var tar = new TarWriter(context.Response.BodyWriter.AsStream(), TarEntryFormat.Pax,
                leaveOpen: true);
            var indexBytes = JsonSerializer.SerializeToUtf8Bytes(index, OperatorJson.Default.ExportIndex);
            await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.RegularFile, IndexName)
            { DataStream = new MemoryStream(indexBytes) }, context.RequestAborted);
            foreach (var (r, path) in paths)
            {
                await using var data = File.OpenRead(path);
                await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.RegularFile, $"bundles/{r.Bundle}")
                { DataStream = data }, context.RequestAborted);
            }
        }).Produces(StatusCodes.Status200OK, contentType: "application/x-tar")
          .Describe("Export good releases as a tar (air-gap; query: build)", Role.Operator);

        app.MapPost("/api/v1/import", async (HttpContext context, Releases releases) =>
        {
            var who = await Http.RequireAsync(context, Role.Operator);
            var bundles = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            ExportIndex? index = null;
            long total = 0;
            try
            {
                await using var reader = new TarReader(context.Request.Body, leaveOpen: true);
                while (await reader.GetNextEntryAsync(copyData: false, context.RequestAborted) is { } entry)
                {
                    if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
                    if (entry.Length > Bundle.MaxLength) throw ApiProblem.BadRequest($"{entry.Name} is larger than a " +
                        $"bundle can be");
                    total += entry.Length;
                    if (total > MaxImportBytes) throw new ApiProblem(413, "request too large",
                        $"an import is at most {MaxImportBytes} bytes");
                    using var buffer = new MemoryStream();
                    if (entry.DataStream is not null) await entry.DataStream.CopyToAsync(buffer,
                        context.RequestAborted);
                    if (entry.Name == IndexName)
                    {
                        try { index = JsonSerializer.Deserialize(buffer.ToArray(), OperatorJson.Default.ExportIndex); }
                        catch (JsonException e)
                        {
                            throw ApiProblem.BadRequest($"{IndexName} is not valid: {e.Message}");
                        }
                    }
                    else if (entry.Name.StartsWith("bundles/", StringComparison.Ordinal))
                    {
                        var name = entry.Name["bundles/".Length..];
                        var bytes = buffer.ToArray();
                        if (Sha256Digest.Of(bytes)
                            .ToString() != name) throw ApiProblem.BadRequest($"{entry.Name} does not match its " +
                            $"SHA-256: the export was altered or damaged");
                        bundles[name] = bytes;
                    }
                }
            }
            catch (InvalidDataException e) { throw ApiProblem.BadRequest($"not a Kintsugi export (tar): {e.Message}"); }
            if (index is null
                || index.Format != Format) throw ApiProblem.BadRequest($"not a Kintsugi export: {IndexName} with " +
                $"format {Format} is missing");
            var results = new List<ImportedRelease>();
            foreach (var r in index.Releases.OrderBy(r => r.BuildId, StringComparer.Ordinal).ThenBy(r => r.Level))
            {
                if (!bundles.TryGetValue(r.Bundle, out var bytes))
                {
                    results.Add(new ImportedRelease(r.Bundle, null, false,
                        "the bundle is listed but not in the archive"));
                    continue;
                }
                try
                {
                    var published = await releases.PublishAsync(bytes,
                        who.Actor with { Name = who.Actor.Name + " via import" });
                    results.Add(new ImportedRelease(r.Bundle, published.Release.Id, published.Created, null));
                }
                catch (FleetException e) { results.Add(new ImportedRelease(r.Bundle, null, false, e.Message)); }
            }
            return new ImportResult(results.Count(r => r.Created), results.Count(r => r.Refused is null && !r.Created),
                results.Count(r => r.Refused is not null), results);
        }).Body<byte[]>("application/x-tar")
          .Describe("Import an export tar; each bundle must verify against this server's keys", Role.Operator);
    }
}
