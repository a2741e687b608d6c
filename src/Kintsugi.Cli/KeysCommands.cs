using System.CommandLine;
using Kintsugi.Bundles;

namespace Kintsugi.Cli;

/// <summary>Key ids and states as keys commands print them with --json.</summary>
public sealed record KeyListing(string Id, string State, string File);

/// <summary>kintsugi keys ...: publisher keys and the trust store that pins them.</summary>
internal static class KeysCommands
{
    public const string DefaultTrustStore = "/etc/kintsugi/trust";

    public static Option<string> TrustOption() =>
        new("--trust")
        {
            Description = $"The trust store directory (trusted/ and retired/ public keys)",
            DefaultValueFactory = _ => DefaultTrustStore
        };

    public static Command Create()
    {
        var keys = new Command("keys",
            "Generate publisher keys; trust, retire and list them in a trust store (rotation: trust the new key, " +
            "re-sign, then retire the old one)");
        keys.Subcommands.Add(Generate());
        keys.Subcommands.Add(Trust());
        keys.Subcommands.Add(Retire());
        keys.Subcommands.Add(List());
        keys.Subcommands.Add(SignRoot());
        keys.Subcommands.Add(ApplyRoot());
        return keys;
    }

    private static Command SignRoot()
    {
        var rootKey = new Option<FileInfo>("--key")
        { Description = "The offline root private key (kintsugi keys generate)", Required = true };
        var version = new Option<long>("--version")
        { Description = "The update's version: above every version signed before", Required = true };
        var output = new Option<FileInfo>("--output", "-o")
        { Description = "Where to write the signed update (trust-root.json)", Required = true };
        var trust = TrustOption();
        trust.Description =
            "The trust store whose trusted, retired and timestamp keys the update lists (the publisher's reference " +
            "store)";
        var command = new Command("sign-root",
            "Sign a trust-root update with an offline root key: machines that pin the root key trust, retire and add " +
            "the keys it lists") { rootKey, version, output, trust };
        command.Action = Cli.Run(parse =>
        {
            using var key = PublisherKey.Load(parse.GetValue(rootKey)!.FullName);
            var store = TrustStore.Open(parse.GetValue(trust)!);
            var update = SignedTrustRoot.Create(parse.GetValue(version),
                store.Keys.Where(k => k.State == KeyState.Trusted).Select(k => k.Key),
                store.Keys.Where(k => k.State == KeyState.Retired).Select(k => k.Key), store.TimestampKeys, key);
            var path = parse.GetValue(output)!.FullName;
            File.WriteAllText(path, update.Text);
            Console.WriteLine($"{update}: {update.Trusted.Count} trusted, {update.Retired.Count} retired, " +
                $"{update.TimestampKeys.Count} timestamp key(s) -> {path}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command ApplyRoot()
    {
        var document = new Argument<FileInfo>("trust-root.json") { Description = "A signed trust-root update" };
        var trust = TrustOption();
        var command = new Command("apply-root",
            "Apply a signed trust-root update to a trust store by hand (the agent does it at every check)")
            { document, trust };
        command.Action = Cli.Run(parse =>
        {
            var store = TrustStore.Open(parse.GetValue(trust)!);
            var changes = store.Apply(SignedTrustRoot.Read(File.ReadAllText(parse.GetValue(document)!.FullName)));
            Console.WriteLine(changes.Count == 0 ? "already applied; nothing changed"
                : string.Join(Environment.NewLine, changes));
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Generate()
    {
        var path = new Argument<FileInfo>("private-key")
        {
            Description =
            "Where to write the private key (PKCS#8 PEM, mode 0600, never overwritten); the public key goes to the " +
            "same path + .pub"
        };
        var json = Cli.Json();
        var command = new Command("generate",
            "Create a publisher signing key (ECDSA P-256): keep the private key offline, give the .pub to every " +
            "trust store") { path, json };
        command.Action = Cli.Run(parse =>
        {
            var file = parse.GetValue(path)!.FullName;
            var publicFile = file + ".pub";
            if (File.Exists(publicFile))
                throw new BundleException(BundleFailure.KeyFile, $"{publicFile} already exists; choose another name");
            using var key = PublisherKey.Generate();
            key.Save(file);
            key.PublicKey.Save(publicFile);
            if (parse.GetValue(json))
            {
                Cli.WriteJson(new KeyListing(key.Id.ToString(), "private", file),
                CliJson.Default.KeyListing); return Task.FromResult(0);
            }
            Console.WriteLine($"key id:      {key.Id}");
            Console.WriteLine($"private key: {file} (keep it offline)");
            Console.WriteLine($"public key:  {publicFile} (add it to trust stores: kintsugi keys trust {publicFile})");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Trust()
    {
        var path = new Argument<FileInfo>("public-key")
        { Description = "A publisher's public key (.pub, SubjectPublicKeyInfo PEM)" };
        var trust = TrustOption();
        var timestamp = new Option<bool>("--timestamp")
        {
            Description =
            "Trust it as an online timestamp key (a server's keys/timestamp.pub): it may only extend release " +
            "metadata's freshness"
        };
        var root = new Option<bool>("--root")
        {
            Description =
            "Pin it as an offline root key: it may only sign trust-root updates (kintsugi keys sign-root)"
        };
        var json = Cli.Json();
        var command = new Command("trust",
            "Add a publisher's public key to the trust store: bundles it signs verify from now on")
            { path, trust, timestamp, root, json };
        command.WithExamples("kintsugi keys trust publisher.pub",
            "kintsugi keys trust /var/lib/kintsugi-server/keys/timestamp.pub --timestamp --json");
        command.Action = Cli.Run(parse =>
        {
            var key = PublisherPublicKey.Load(parse.GetValue(path)!.FullName);
            var store = TrustStore.Open(parse.GetValue(trust)!);
            var (changed, action, directory) =
                parse.GetValue(root) ? (store.FindRootKey(key.Id) is null, "pinned as a root key",
                    TrustStore.RootDirectoryName)
                : parse.GetValue(timestamp) ? (store.FindTimestampKey(key.Id) is null, "trusted as a timestamp key",
                    TrustStore.TimestampDirectoryName)
                : (store.Find(key.Id) is null, "trusted", TrustStore.TrustedDirectoryName);
            if (parse.GetValue(root)) store.AddRootKey(key);
            else if (parse.GetValue(timestamp)) store.AddTimestampKey(key);
            else store.Add(key);
            if (parse.GetValue(json))
                Cli.WriteJson(new FileChange(changed, action, key.Id.ToString(),
                    Path.Combine(store.Directory, directory, key.Id + ".pem")), ChangeJson.Default.FileChange);
            else Console.WriteLine($"{key.Id}: {action} in {store.Directory}" + (changed ? "" : " (already)"));
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command Retire()
    {
        var key = new Argument<string>("key") { Description = "The key id (32 hex digits) or its public key file" };
        var trust = TrustOption();
        var json = Cli.Json();
        var command = new Command("retire",
            "Retire a key: bundles it signed are refused from now on, whenever they were signed (one-way)")
            { key, trust, json };
        command.WithExamples("kintsugi keys retire old-publisher.pub", "kintsugi keys retire KEY-ID --json");
        command.Action = Cli.Run(parse =>
        {
            var text = parse.GetValue(key)!;
            var id = PublisherKeyId.TryParse(text, out var parsed) ? parsed
                : File.Exists(text) ? PublisherPublicKey.Load(text).Id
                : throw new BundleException(BundleFailure.KeyFile,
                    $"'{text}' is neither a key id (32 lowercase hex digits) nor a public key file");
            var store = TrustStore.Open(parse.GetValue(trust)!);
            var changed = store.Find(id)?.State != KeyState.Retired;
            store.Retire(id);
            if (parse.GetValue(json))
                Cli.WriteJson(new FileChange(changed, "retired", id.ToString(),
                    Path.Combine(store.Directory, TrustStore.RetiredDirectoryName, id + ".pem")),
                    ChangeJson.Default.FileChange);
            else Console.WriteLine($"{id}: retired in {store.Directory}" + (changed ? "" : " (already)"));
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command List()
    {
        var trust = TrustOption();
        var json = Cli.Json();
        var command = new Command("list", "List the keys of a trust store and whether each is trusted or retired")
            { trust, json };
        command.Action = Cli.Run(parse =>
        {
            var store = TrustStore.Open(parse.GetValue(trust)!);
            var listing =
                store.Keys.Select(k => new KeyListing(k.Id.ToString(), k.State == KeyState.Trusted ? "trusted"
                : "retired",
                Path.Combine(store.Directory, k.State == KeyState.Trusted ? TrustStore.TrustedDirectoryName
                    : TrustStore.RetiredDirectoryName, k.Id + ".pem"))).ToList();
            if (parse.GetValue(json))
            {
                Cli.WriteJson<IReadOnlyList<KeyListing>>(listing, CliJson.Default.IReadOnlyListKeyListing);
                return Task.FromResult(0);
            }
            if (listing.Count == 0) Console.WriteLine($"no keys in {store.Directory}: every bundle would be refused");
            foreach (var k in listing) Console.WriteLine($"{k.Id}  {k.State}");
            return Task.FromResult(0);
        });
        return command;
    }
}
