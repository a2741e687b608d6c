using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.Kernel.Archive;

namespace Kintsugi.Cli;

/// <summary>bundle inspect --json: what the file says, not yet trusted.</summary>
public sealed record BundleInspection(string File, string Sha256, long Size, int FormatVersion, string KeyId,
    bool Verified, BundleManifest Manifest);

/// <summary>bundle verify --json.</summary>
public sealed record BundleVerification(string File, string Sha256, bool Verified, string KeyId, string KeyState,
    string Target, bool TargetChecked, int Level, IReadOnlyList<string> Cves);

/// <summary>kintsugi bundle ...: sign a livepatch module into a bundle, verify it, show what it contains.</summary>
internal static class BundleCommands
{
    public static Command Create()
    {
        var bundle = new Command("bundle",
            "Sign livepatch modules into bundles (module + signed manifest: target kernel, level, fixes, CVEs), " +
            "verify and inspect them");
        bundle.Subcommands.Add(Sign());
        bundle.Subcommands.Add(Verify());
        bundle.Subcommands.Add(Inspect());
        bundle.Subcommands.Add(Metadata());
        return bundle;
    }

    private static Command Sign()
    {
        var module = new Argument<FileInfo>("module.ko")
        { Description = "The livepatch module (tested on its target kernel)" };
        var key = new Option<FileInfo>("--key")
        { Description = "The publisher's private key (from kintsugi keys generate)", Required = true };
        var description = new Option<FileInfo>("--description")
        {
            Description =
            "JSON file stating the level, the fixes with their CVEs, and the patched functions (see docs/cli.md)",
            Required = true
        };
        var buildId = new Option<string?>("--build-id")
        {
            Description =
            "The target kernel's build-id (hex); without it the kernel named by the module's vermagic is fetched and " +
            "its build-id read"
        };
        var packageVersion = new Option<string?>("--package-version")
        { Description = "With --build-id: the target kernel's package version (informational)" };
        var level = new Option<int?>("--level") { Description = "The cumulative level (overrides the description's)" };
        var output = new Option<FileInfo?>("--output", "-o")
        { Description = "Where to write the bundle (default: the module's name with .bundle)" };
        var command = new Command("sign", "Sign a livepatch module into a bundle for its exact target kernel")
            { module, key, description, buildId, packageVersion, level, output };
        command.Action = Cli.Run(async parse =>
        {
            var modulePath = parse.GetValue(module)!.FullName;
            if (UserBundle.IsUserPatch(modulePath))
                return await UserBundle.Sign(modulePath, parse.GetValue(key)!.FullName,
                    DescriptionFile.Read(parse.GetValue(description)!.FullName, userPatch: true),
                    parse.GetValue(level), parse.GetValue(packageVersion), parse.GetValue(output)?.FullName);
            var file = ModuleFile.Read(modulePath);
            if (!file.IsLivepatch)
                throw new BundleException(BundleFailure.InvalidManifest,
                $"{modulePath} is not a livepatch module (no livepatch=Y in .modinfo); only livepatches are bundled");
            var releaseText = file.VermagicRelease
                ?? throw new BundleException(BundleFailure.InvalidManifest,
                $"{modulePath} has no vermagic; cannot tell which kernel it targets");
            var release = KernelRelease.Parse(releaseText);
            using var signingKey = PublisherKey.Load(parse.GetValue(key)!.FullName);

            KernelTarget target;
            if (parse.GetValue(buildId) is { } hex)
            {
                if (!BuildId.TryParse(hex.ToLowerInvariant(), out var id))
                    throw new BundleException(BundleFailure.InvalidManifest,
                    $"--build-id '{hex}' is not a build-id (hex digits)");
                target = new KernelTarget(release, parse.GetValue(packageVersion), id);
            }
            else
            {
                Cli.Progress($"reading the build-id of {release} from the distribution's kernel image (cached after " +
                    "the first fetch)");
                var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot, Cli.Progress)
                    .FetchAsync(release, KernelParts.Image);
                target = kernel.Target;
            }

            var stated = DescriptionFile.Read(parse.GetValue(description)!.FullName);
            var cumulativeLevel = parse.GetValue(level) ?? stated.Level
                ?? throw new BundleException(BundleFailure.InvalidManifest,
                    "no cumulative level: give \"level\" in the description or --level");
            var bundle = Bundle.Create(File.ReadAllBytes(modulePath), new BundleDescription
            {
                Target = target,
                CumulativeLevel = cumulativeLevel,
                Fixes = stated.Fixes,
                PatchedFunctions = stated.PatchedFunctions,
                CreatedAt = DateTimeOffset.UtcNow,
                BuilderVersion = Cli.Version,
                EffectivePackageVersion = stated.EffectivePackageVersion ?? file[LoadedRecord.EffectiveVersionKey],
            }, signingKey);
            var outputPath = parse.GetValue(output)?.FullName ?? Path.ChangeExtension(modulePath, ".bundle");
            bundle.Save(outputPath);
            Console.WriteLine($"{outputPath}: level {cumulativeLevel} for {target}, {stated.Fixes.Count} fix(es), " +
                $"signed by {signingKey.Id}");
            Console.WriteLine($"sha256 {Sha256Digest.Of(bundle.ToArray())}");
            return 0;
        });
        return command;
    }

    private static Command Metadata()
    {
        var key = new Option<FileInfo>("--key")
        { Description = "The publisher's private key (the one that signs bundles)", Required = true };
        var release = new Option<string?>("--release")
        { Description = "The kernel release (uname -r), for a kernel build's levels" };
        var userObject = new Option<string?>("--object")
        {
            Description = "The user-space object's file name (for example libcrypto.so.3), for its user-space patch " +
                "levels instead of a kernel's"
        };
        var buildId = new Option<string>("--build-id")
        { Description = "The kernel build's or the object's GNU build-id (hex)", Required = true };
        var version = new Option<long>("--metadata-version")
        { Description = "The metadata version: above every version signed before for this build", Required = true };
        var current = new Option<int>("--current")
        { Description = "The highest level published for this build", Required = true };
        var minimum = new Option<int>("--minimum")
        { Description = "The lowest level machines may run (default 0: none)" };
        var revoke = new Option<int[]>("--revoke")
        { Description = "A revoked level (repeatable)", AllowMultipleArgumentsPerToken = true };
        var expires = new Option<string>("--expires")
        {
            Description =
            "How long the statement holds before agents report it stale, unless a timestamp extends it (e.g. 30d)",
            DefaultValueFactory = _ => "30d"
        };
        var output = new Option<FileInfo>("--output", "-o")
        { Description = "Where to write the signed metadata", Required = true };
        var command = new Command("metadata",
            "Sign release metadata for one kernel build or user-space object: current, minimum and revoked levels, " +
            "with an expiry (docs/bundle-format.md)")
            { key, release, userObject, buildId, version, current, minimum, revoke, expires, output };
        command.Action = Cli.Run(parse =>
        {
            var hex = parse.GetValue(buildId)!.ToLowerInvariant();
            if (!BuildId.TryParse(hex, out var id))
                throw new BundleException(BundleFailure.InvalidMetadata,
                $"--build-id '{hex}' is not a build-id (hex digits)");
            var lifetime = Kintsugi.Agent.AgentConfig.ParseDuration(parse.GetValue(expires)!, "--expires", 0,
                TimeSpan.FromMinutes(1));
            using var signingKey = PublisherKey.Load(parse.GetValue(key)!.FullName);
            var (kernel, named) = (parse.GetValue(release), parse.GetValue(userObject));
            if ((kernel is null) == (named is null))
                throw new UsageException(
                    "give --release (a kernel build) or --object (a user-space object), one of them");
            var signed = SignedReleaseMetadata.Create(new ReleaseMetadataDescription(
                kernel is null ? null : new KernelTarget(KernelRelease.Parse(kernel), null, id),
                parse.GetValue(version), parse.GetValue(current), parse.GetValue(minimum), parse.GetValue(revoke) ?? [],
                    DateTimeOffset.UtcNow + lifetime, named is null ? null : new ObjectTarget(named, id)), signingKey);
            var path = parse.GetValue(output)!.FullName;
            File.WriteAllText(path, signed.Text);
            var m = signed.Metadata;
            Console.WriteLine($"{path}: {signed}, current level {m.CurrentLevel}, minimum {m.MinimumLevel}, revoked " +
                $"[{string.Join(",", m.RevokedLevels)}], expires {m.Expires:u}, signed by {signingKey.Id}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Verify()
    {
        var path = new Argument<FileInfo>("bundle") { Description = "The bundle file" };
        var trust = KeysCommands.TrustOption();
        var running = new Option<bool>("--running")
        {
            Description =
            "Also require that the bundle targets the running kernel (release and build-id), as the agent does"
        };
        var release = new Option<string?>("--release")
        { Description = "Also require this target release (with --build-id)" };
        var buildId = new Option<string?>("--build-id")
        { Description = "Also require this target build-id (with --release)" };
        var json = Cli.Json();
        var command = new Command("verify",
            "Check a bundle: well-formed, signed by a trusted (not retired) key, module intact, and optionally for " +
            "the exact kernel; exits 3 with the reason otherwise") { path, trust, running, release, buildId, json };
        command.Action = Cli.Run(parse =>
        {
            var file = parse.GetValue(path)!.FullName;
            KernelTarget? expected = null;
            if (parse.GetValue(running))
                expected = new KernelTarget(RunningKernel.Release, null, RunningKernel.BuildId
                    ?? throw new LivepatchException("the running kernel's build-id cannot be read from " +
                    "/sys/kernel/notes", ExitCode.Environment));
            else if (parse.GetValue(release) is { } r && parse.GetValue(buildId) is { } b)
                expected = new KernelTarget(KernelCommands.ParseRelease(r), null,
                    BuildId.TryParse(b.ToLowerInvariant(), out var id) ? id
                    : throw new UsageException($"--build-id '{b}' is not a build-id (hex digits)"));
            else if (parse.GetValue(release) is not null || parse.GetValue(buildId) is not null)
                throw new UsageException("--release and --build-id go together (or use --running)");

            var bytes = ReadAll(file);
            var verified = BundleVerifier.Verify(Bundle.Read(bytes), TrustStore.Open(parse.GetValue(trust)!), expected);
            var manifest = verified.Manifest;
            var result = new BundleVerification(file, Sha256Digest.Of(bytes).ToString(), true,
                verified.Publisher.Id.ToString(), "trusted", ((object?)manifest.Object ?? manifest.Target)!.ToString()!,
                expected is not null, manifest.CumulativeLevel, manifest.Cves.Select(c => c.ToString()).ToList());
            if (parse.GetValue(json))
            {
                Cli.WriteJson(result, BundleJson.Default.BundleVerification);
                return Task.FromResult(0);
            }
            Console.WriteLine($"{file}: verified");
            Console.WriteLine($"  signed by trusted key {result.KeyId}; module {manifest.ModuleSize} bytes, sha256 " +
                "matches");
            Console.WriteLine($"  target {(object?)manifest.Object ?? manifest.Target}"
                + (expected is null ? " (not compared: use --running on the machine)" : " (matches)"));
            Console.WriteLine($"  level {manifest.CumulativeLevel}: " +
                $"{string.Join(", ", manifest.Fixes.Select(f => f.Id))}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Inspect()
    {
        var path = new Argument<FileInfo>("bundle") { Description = "The bundle file" };
        var json = Cli.Json();
        var command = new Command("inspect",
            "Show what a bundle says (target, level, fixes, CVEs, patched functions, digests, signing key) without " +
            "trusting it") { path, json };
        command.Action = Cli.Run(parse =>
        {
            var file = parse.GetValue(path)!.FullName;
            var bytes = ReadAll(file);
            var bundle = Bundle.Read(bytes);
            var m = bundle.Manifest;
            var inspection = new BundleInspection(file, Sha256Digest.Of(bytes).ToString(), bytes.Length,
                bundle.FormatVersion, bundle.KeyId.ToString(), false, m);
            if (parse.GetValue(json))
            {
                Cli.WriteJson(inspection, BundleJson.Default.BundleInspection);
                return Task.FromResult(0);
            }
            Console.WriteLine($"bundle:     {file} ({bytes.Length} bytes, sha256 {inspection.Sha256})");
            Console.WriteLine($"signed by:  {bundle.KeyId} (NOT verified: use kintsugi bundle verify)");
            Console.WriteLine(m.Object is { } o ? $"target:     user-space object {o}" : $"target:     {m.Target}");
            Console.WriteLine($"level:      {m.CumulativeLevel}");
            Console.WriteLine($"effective:  {m.EffectivePackageVersion ?? "-"}");
            Console.WriteLine($"created:    {m.CreatedAt:u} by builder {m.BuilderVersion}");
            Console.WriteLine($"module:     {m.ModuleSize} bytes, sha256 {m.ModuleSha256}");
            foreach (var fix in m.Fixes)
            {
                Console.WriteLine($"fix:        {fix.Id}: {fix.Description.Split('\n')[0]}");
                foreach (var cve in fix.Cves)
                    Console.WriteLine($"              {cve.Id} {cve.Severity.ToString().ToLowerInvariant()}, " +
                    $"published {cve.Published:yyyy-MM-dd}");
            }
            foreach (var f in m.PatchedFunctions) Console.WriteLine($"patches:    {f.Object}:{f.Function}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static byte[] ReadAll(string path)
    {
        try
        {
            var info = new FileInfo(path);
            if (info.Exists && info.Length > Bundle.MaxLength)
                throw new BundleException(BundleFailure.Malformed,
                    $"{path} is {info.Length} bytes, larger than any bundle can be");
            return File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BundleException(BundleFailure.Unreadable, $"cannot read bundle {path}: {e.Message}", e);
        }
    }
}

/// <summary>Bundle output has its own context: the bundle and the runtime both name a type PatchedFunction.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(BundleInspection))]
[JsonSerializable(typeof(BundleVerification))]
internal sealed partial class BundleJson : JsonSerializerContext;

/// <summary>A command line that is well-formed but asks for something contradictory.</summary>
internal sealed class UsageException(string message) : KintsugiException(message)
{
    public override ExitCode ExitCode => ExitCode.Usage;
}

/// <summary>
/// The description file `bundle sign` reads: JSON (comments and trailing commas allowed).
/// <code>
/// { "level": 2, "effectivePackageVersion": "6.1.158-1",
///   "fixes": [ { "id": "CVE-2024-1086", "description": "netfilter: ...",
///                "cves": [ { "id": "CVE-2024-1086", "severity": "high", "published": "2024-01-31" } ] } ],
///   "patchedFunctions": [ "vmlinux:nft_verdict_init" ] }
/// </code>
/// </summary>
/// For a user-space patch, "patchedFunctions" may be left out (the patch names its functions) and "package" names the
/// distribution package that ships the object (for reports).
internal sealed record DescriptionFile(int? Level, IReadOnlyList<BundleFix> Fixes,
    IReadOnlyList<Kintsugi.Bundles.PatchedFunction> PatchedFunctions, string? EffectivePackageVersion, string? Package =
    null)
{
    public static DescriptionFile Read(string path, bool userPatch = false)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException
            or UnauthorizedAccessException)
        { throw Invalid(path, $"cannot read it: {e.Message}", e); }
        try
        {
            using var document = JsonDocument.Parse(text,
                new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Invalid(path, "it must be a JSON object");
            foreach (var property in root.EnumerateObject())
                if (property.Name is not ("level" or "fixes" or "patchedFunctions" or "effectivePackageVersion")
                    && !(userPatch && property.Name == "package"))
                    throw Invalid(path,
                        $"unknown field \"{property.Name}\" (known: level, fixes, patchedFunctions, " +
                        "effectivePackageVersion" + (userPatch ? ", package)" : ")"));
            int? level = root.TryGetProperty("level", out var l) ? l.GetInt32() : null;
            var fixes = Array(root, "fixes", path).Select(f => Fix(f, path)).ToList();
            var functions = userPatch && !root.TryGetProperty("patchedFunctions", out _) ? []
                : Array(root, "patchedFunctions", path).Select(f => Function(f, path)).ToList();
            var effective = root.TryGetProperty("effectivePackageVersion", out var e) && e.ValueKind
                != JsonValueKind.Null ? e.GetString() : null;
            var package =
                root.TryGetProperty("package", out var p) && p.ValueKind != JsonValueKind.Null ? p.GetString() : null;
            return new DescriptionFile(level, fixes, functions, effective, package);
        }
        catch (JsonException e) { throw Invalid(path, e.Message, e); }
        catch (Exception e) when (e is InvalidOperationException
            or FormatException)
        { throw Invalid(path, e.Message, e); }
    }

    private static IEnumerable<JsonElement> Array(JsonElement root, string name, string path) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Array
            ? value.EnumerateArray().ToList()
        : throw Invalid(path, $"\"{name}\" must be a list");

    private static BundleFix Fix(JsonElement fix, string path)
    {
        var id = Text(fix, "id", path);
        var cves = fix.TryGetProperty("cves", out var list) && list.ValueKind == JsonValueKind.Array
            ? list.EnumerateArray().Select(c => new CveReference(
                CveId.TryParse(Text(c, "id", path), out var cve) ? cve
                    : throw Invalid(path, $"fix {id}: '{Text(c, "id", path)}' is not a CVE id (CVE-YYYY-NNNN)"),
                Severity(Text(c, "severity", path), path),
                DateOnly.TryParseExact(Text(c, "published", path), "yyyy-MM-dd", out var date) ? date
                    : throw Invalid(path, $"fix {id}: published must be a date YYYY-MM-DD"))).ToList()
            : [];
        return new BundleFix(id, cves, Text(fix, "description", path));
    }

    private static Kintsugi.Bundles.PatchedFunction Function(JsonElement element, string path)
    {
        if (element.ValueKind == JsonValueKind.String)
        {
            var text = element.GetString()!;
            var colon = text.IndexOf(':');
            return colon > 0 ? new(text[..colon], text[(colon + 1)..]) : new(KernelObjectNames.Vmlinux, text);
        }
        return new(Text(element, "object", path), Text(element, "function", path));
    }

    private static CveSeverity Severity(string text, string path) => text switch
    {
        "none" => CveSeverity.None,
        "low" => CveSeverity.Low,
        "medium" => CveSeverity.Medium,
        "high" =>
            CveSeverity.High,
        "critical" => CveSeverity.Critical,
        _ => throw Invalid(path, $"severity '{text}' is not one of none, low, medium, high, critical"),
    };

    private static string Text(JsonElement element, string name, string path) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value) && value.ValueKind
            == JsonValueKind.String ? value.GetString()!
        : throw Invalid(path,
            $"a \"{name}\" text is missing in {element.GetRawText()[..Math.Min(80, element.GetRawText().Length)]}");

    private static BundleException Invalid(string path, string message, Exception? inner = null) =>
        new(BundleFailure.InvalidManifest, $"description {path}: {message}", inner);
}
