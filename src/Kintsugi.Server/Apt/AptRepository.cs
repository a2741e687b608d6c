using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;

namespace Kintsugi.Server.Apt;

/// <summary>A package the apt repository refused.</summary>
public sealed class AptPackageException(string message) : KintsugiException(message)
{
    public override ExitCode ExitCode => ExitCode.InputRefused;
}

/// <summary>
/// An apt repository of the agent package (<c>kintsugi</c>), hosted by the server so machines upgrade the
/// agent with <c>apt upgrade</c>. Layout under DATA/apt: <c>pool/</c> (the .deb files), <c>dists/stable/</c>
/// (Release, InRelease, Release.gpg, main/binary-amd64/Packages and Packages.gz) and <c>key.asc</c>, the
/// repository's own OpenPGP signing key (ed25519, generated on first use with gpg in DATA/apt/gnupg, which
/// is never served). Indexes are regenerated and re-signed whenever a package is added.
/// </summary>
public sealed class AptRepository(string dataDirectory)
{
    public const string Suite = "stable";
    public const string Component = "main";
    public const string PackageName = "kintsugi";

    private readonly SemaphoreSlim _write = new(1, 1);

    public string Root => Path.Combine(dataDirectory, "apt");
    private string Home => Path.Combine(Root, "gnupg");
    private string Pool => Path.Combine(Root, "pool");
    private string Dists => Path.Combine(Root, "dists", Suite);
    public string PublicKey => Path.Combine(Root, "key.asc");

    /// <summary>The file a request path names, only under pool/, dists/ or key.asc; null otherwise.</summary>
    public string? Resolve(string relative)
    {
        if (relative == "key.asc") { EnsureKey(); return PublicKey; }
        if (!(relative.StartsWith("pool/", StringComparison.Ordinal)
            || relative.StartsWith("dists/", StringComparison.Ordinal))) return null;
        var full = Path.GetFullPath(Path.Combine(Root, relative));
        return full.StartsWith(Root + "/", StringComparison.Ordinal) && File.Exists(full) ? full : null;
    }

    /// <summary>Adds a kintsugi .deb and re-signs the indexes; returns its version.</summary>
    public async Task<string> AddAsync(byte[] deb, CancellationToken cancellation)
    {
        await _write.WaitAsync(cancellation);
        try
        {
            EnsureKey();
            Directory.CreateDirectory(Pool);
            var incoming = Path.Combine(Root, $"incoming-{Guid.NewGuid():N}.deb");
            await File.WriteAllBytesAsync(incoming, deb, cancellation);
            try
            {
                var fields = Control(incoming);
                if (fields.GetValueOrDefault("Package") != PackageName)
                    throw new AptPackageException($"only the agent package '{PackageName}' is hosted here, not " +
                        $"'{fields.GetValueOrDefault("Package")}'");
                if (fields.GetValueOrDefault("Architecture") != "amd64") throw new AptPackageException("only amd64 " +
                    "packages are hosted");
                var version = fields.GetValueOrDefault("Version")
                    ?? throw new AptPackageException("the package has no Version");
                if (version.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '.' or '+' or '-' or '~' or ':')))
                    throw new AptPackageException($"'{version}' is not a Debian version");
                File.Move(incoming, Path.Combine(Pool, $"{PackageName}_{version.Replace(':', '%')}_amd64.deb"),
                    overwrite: true);
                WriteIndexes();
                return version;
            }
            finally { File.Delete(incoming); }
        }
        finally { _write.Release(); }
    }

    private static Dictionary<string, string> Control(string deb)
    {
        var result = ExternalCommand.Run("dpkg-deb", "-f", deb);
        if (!result.Succeeded) throw new AptPackageException($"not a Debian package: {result.StandardError.Trim()}");
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        string? last = null;
        foreach (var line in result.StandardOutput.Split('\n'))
        {
            if (line.StartsWith(' ') && last is not null) { fields[last] += "\n" + line; continue; }
            var colon = line.IndexOf(':');
            if (colon <= 0) continue;
            last = line[..colon];
            fields[last] = line[(colon + 1)..].Trim();
        }
        return fields;
    }

    private void WriteIndexes()
    {
        var packages = new StringBuilder();
        foreach (var deb in Directory.GetFiles(Pool, "*.deb").Order(StringComparer.Ordinal))
        {
            var bytes = File.ReadAllBytes(deb);
            foreach (var (key, value) in Control(deb)) packages.Append($"{key}: {value}\n");
            packages.Append($"Filename: pool/{Path.GetFileName(deb)}\nSize: {bytes.Length}\n")
                .Append($"MD5sum: {Convert.ToHexStringLower(MD5.HashData(bytes))}\nSHA256: " +
                    $"{Convert.ToHexStringLower(SHA256.HashData(bytes))}\n\n");
        }
        var binary = Path.Combine(Dists, Component, "binary-amd64");
        Directory.CreateDirectory(binary);
        var plain = Encoding.UTF8.GetBytes(packages.ToString());
        using var gz = new MemoryStream();
        using (var zip = new GZipStream(gz, CompressionLevel.SmallestSize, leaveOpen: true)) zip.Write(plain);
        var indexes = new (string Name, byte[] Bytes)[] { ($"{Component}/binary-amd64/Packages", plain),
            ($"{Component}/binary-amd64/Packages.gz", gz.ToArray()) };
        foreach (var (name, bytes) in indexes) WriteAtomically(Path.Combine(Dists, name), bytes);

        var release = new StringBuilder()
            .Append("Origin: Kintsugi\nLabel: Kintsugi agent\n")
            .Append($"Suite: {Suite}\nCodename: {Suite}\n")
            .Append($"Date: {DateTimeOffset.UtcNow.ToString("ddd, dd MMM yyyy HH:mm:ss",
                System.Globalization.CultureInfo.InvariantCulture)} UTC\n")
            .Append($"Architectures: amd64\nComponents: {Component}\nDescription: the Kintsugi agent, from this " +
                $"patch server\n");
        release.Append("MD5Sum:\n");
        foreach (var (name,
            bytes) in indexes) release.Append($" {Convert.ToHexStringLower(MD5.HashData(bytes))} {bytes.Length,16} " +
            $"{name}\n");
        release.Append("SHA256:\n");
        foreach (var (name,
            bytes) in indexes) release.Append($" {Convert.ToHexStringLower(SHA256.HashData(bytes))} " +
            $"{bytes.Length,16} {name}\n");
        var releasePath = Path.Combine(Dists, "Release");
        WriteAtomically(releasePath, release.ToString());
        Gpg("--clearsign", "--output", Path.Combine(Dists, "InRelease.tmp"), releasePath);
        File.Move(Path.Combine(Dists, "InRelease.tmp"), Path.Combine(Dists, "InRelease"), overwrite: true);
        Gpg("--detach-sign", "--armor", "--output", Path.Combine(Dists, "Release.gpg.tmp"), releasePath);
        File.Move(Path.Combine(Dists, "Release.gpg.tmp"), Path.Combine(Dists, "Release.gpg"), overwrite: true);
    }

    /// <summary>The repository's signing key: generated once, its public part exported as key.asc.</summary>
    private void EnsureKey()
    {
        if (File.Exists(PublicKey)) return;
        OwnerOnly.CreateDirectory(Home); // gpg's home: the repository's private signing key
        Gpg("--passphrase", "", "--quick-generate-key", "Kintsugi patch server apt repository", "ed25519", "sign",
            "never");
        var exported = ExternalCommand.Run("gpg", "--homedir", Home, "--batch", "--export", "--armor");
        if (!exported.Succeeded
            || exported.StandardOutput.Length == 0) throw new ServerConfigurationException($"cannot export the apt " +
            $"signing key: {exported.StandardError.Trim()}");
        WriteAtomically(PublicKey, exported.StandardOutput);
    }

    /// <summary>apt may fetch while a package is added: an index is the old one or the new one, never half.</summary>
    private static void WriteAtomically(string path, string text) =>
        WriteAtomically(path, Encoding.UTF8.GetBytes(text));

    private static void WriteAtomically(string path, byte[] bytes)
    {
        var temporary = path + ".tmp";
        File.WriteAllBytes(temporary, bytes);
        File.Move(temporary, path, overwrite: true);
    }

    private void Gpg(params string[] arguments)
    {
        string[] all = ["--homedir", Home, "--batch", "--yes", "--pinentry-mode", "loopback", .. arguments];
        var result = ExternalCommand.Run("gpg", all);
        if (!result.Succeeded) throw new ServerConfigurationException($"gpg {string.Join(' ', arguments.Take(1))} " +
            $"failed: {result.StandardError.Trim()}");
    }
}
