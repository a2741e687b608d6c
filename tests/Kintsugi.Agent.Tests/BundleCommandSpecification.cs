using System.Text.Json;
using Kintsugi.Bundles;
using Kintsugi.Testing;

namespace Kintsugi.Agent.Tests;

/// <summary>keys and bundle commands, through the real kintsugi binary, on a real livepatch module.</summary>
public sealed class BundleCommandSpecification : IDisposable
{
    private readonly TemporaryDirectory _dir = new();
    private static Task<KernelUnderTest> Kernel => KernelUnderTest.GetAsync(TestKernels.Debian12Cloud61);

    public void Dispose() => _dir.Dispose();

    private static Task<CommandResult> Kintsugi(params string[] arguments) =>
        ExternalCommand.RunAsync(Repository.KintsugiBinary, arguments);

    private static void Succeeded(CommandResult result) =>
        Assert.True(result.ExitCode == 0, $"exit {result.ExitCode}\n{result.StandardOutput}\n{result.StandardError}");

    private static void Refused(CommandResult result, string because)
    {
        Assert.True(result.ExitCode == (int)ExitCode.InputRefused,
            $"expected exit 3, got {result.ExitCode}\n{result.StandardOutput}\n{result.StandardError}");
        Assert.Contains(because, result.StandardError);
    }

    private const string DescriptionJson = """
        // what the fixture fixes (JSON with comments)
        { "level": 2,
          "fixes": [ { "id": "CVE-2024-1086", "description": "netfilter: nf_tables: reject QUEUE/DROP verdict parameters",
                       "cves": [ { "id": "CVE-2024-1086", "severity": "high", "published": "2024-01-31" } ] },
                     { "id": "hardening-1", "description": "no CVE" } ],
          "patchedFunctions": [ "vmlinux:cmdline_proc_show" ], }
        """;

    /// <summary>keys generate + keys trust + bundle sign of fixture b; returns the bundle path.</summary>
    private async Task<string> SignedBundleAsync(string keyName = "publisher.key", string? buildId = null)
    {
        var kernel = await Kernel;
        if (!File.Exists(_dir[keyName])) Succeeded(await Kintsugi("keys", "generate", _dir[keyName]));
        Succeeded(await Kintsugi("keys", "trust", _dir[keyName + ".pub"], "--trust", _dir["trust"]));
        File.WriteAllText(_dir["fix.json"], DescriptionJson);
        var output = _dir[$"{keyName}.bundle"];
        Succeeded(await Kintsugi("bundle", "sign", kernel.Modules["kintsugi_fixture_cmdline_b"], "--key", _dir[keyName],
            "--description", _dir["fix.json"],
            "--build-id", buildId ?? kernel.Kernel.Target.BuildId.ToString(), "-o", output));
        return output;
    }

    private Task<CommandResult> VerifyAsync(string bundle, params string[] extra) =>
        Kintsugi(["bundle", "verify", bundle, "--trust", _dir["trust"], .. extra]);

    [Fact]
    public async Task Generate_writes_a_private_key_only_its_owner_can_read_and_never_overwrites_it()
    {
        var result = await Kintsugi("keys", "generate", _dir["k.key"], "--json");
        Succeeded(result);
        using var json = JsonDocument.Parse(result.StandardOutput);
        using var key = PublisherKey.Load(_dir["k.key"]);
        Assert.Equal(key.Id.ToString(), json.RootElement.GetProperty("id").GetString());
        Assert.Equal(key.Id, PublisherPublicKey.Load(_dir["k.key.pub"]).Id);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(_dir["k.key"]));
        var again = await Kintsugi("keys", "generate", _dir["k.key"]);
        Assert.NotEqual(0, again.ExitCode);
        Assert.Equal(key.Id, PublisherKey.Load(_dir["k.key"]).Id);
    }

    [Fact]
    public async Task A_signed_bundle_verifies_against_the_trust_store_and_its_target()
    {
        var kernel = await Kernel;
        var bundle = await SignedBundleAsync();
        var result = await VerifyAsync(bundle, "--release", kernel.Release.Value, "--build-id",
            kernel.Kernel.Target.BuildId.ToString(), "--json");
        Succeeded(result);
        using var json = JsonDocument.Parse(result.StandardOutput);
        Assert.True(json.RootElement.GetProperty("verified").GetBoolean());
        Assert.True(json.RootElement.GetProperty("targetChecked").GetBoolean());
        Assert.Equal(2, json.RootElement.GetProperty("level").GetInt32());
        Assert.Equal(["CVE-2024-1086"],
            json.RootElement.GetProperty("cves").EnumerateArray().Select(c => c.GetString()));
    }

    [Fact]
    public async Task Without_a_build_id_sign_takes_the_target_from_the_fetched_kernel_the_module_was_built_for()
    {
        var kernel = await Kernel;
        Succeeded(await Kintsugi("keys", "generate", _dir["k.key"]));
        File.WriteAllText(_dir["fix.json"], DescriptionJson);
        var sign = await Kintsugi("bundle", "sign", kernel.Modules["kintsugi_fixture_cmdline_b"], "--key",
            _dir["k.key"], "--description", _dir["fix.json"], "-o", _dir["b.bundle"]);
        Succeeded(sign);
        var manifest = Bundle.ReadFile(_dir["b.bundle"]).Manifest;
        Assert.Equal(kernel.Kernel.Target, manifest.Target);
        // The module's own modinfo names the version it makes the kernel equivalent to.
        Assert.Equal("99.0.0-kintsugi-fixture", manifest.EffectivePackageVersion);
        Assert.Equal(File.ReadAllBytes(kernel.Modules["kintsugi_fixture_cmdline_b"]),
            Bundle.ReadFile(_dir["b.bundle"]).Module.ToArray());
    }

    [Fact]
    public async Task Inspect_shows_the_manifest_without_trusting_it()
    {
        var bundle = await SignedBundleAsync();
        var result = await Kintsugi("bundle", "inspect", bundle, "--json");
        Succeeded(result);
        using var json = JsonDocument.Parse(result.StandardOutput);
        var root = json.RootElement;
        Assert.False(root.GetProperty("verified").GetBoolean());
        Assert.Equal(Sha256Digest.Of(File.ReadAllBytes(bundle)).ToString(), root.GetProperty("sha256").GetString());
        var manifest = root.GetProperty("manifest");
        Assert.Equal(2, manifest.GetProperty("cumulativeLevel").GetInt32());
        var fixes = manifest.GetProperty("fixes").EnumerateArray().ToList();
        Assert.Equal(["CVE-2024-1086", "hardening-1"], fixes.Select(f => f.GetProperty("id").GetString()));
        var cve = Assert.Single(fixes[0].GetProperty("cves").EnumerateArray());
        Assert.Equal("high", cve.GetProperty("severity").GetString());
        Assert.Equal("2024-01-31", cve.GetProperty("published").GetString());
        Assert.Equal("cmdline_proc_show", Assert.Single(manifest.GetProperty("patchedFunctions").EnumerateArray())
            .GetProperty("function").GetString());
        var text = await Kintsugi("bundle", "inspect", bundle);
        Succeeded(text);
        Assert.Contains("NOT verified", text.StandardOutput);
    }

    [Theory]
    [InlineData("manifest", "the bundle was altered after signing")]
    [InlineData("module", "the module was altered")]
    [InlineData("signature", "the bundle was altered after signing")]
    public async Task A_bundle_with_one_byte_changed_is_refused(string section, string because)
    {
        var path = await SignedBundleAsync();
        var bytes = File.ReadAllBytes(path);
        var offset = section switch
        {
            // A byte inside a JSON string of the manifest keeps it canonical, so only the signature catches it.
            "manifest" =>
                System.Text.Encoding.UTF8.GetString(bytes).IndexOf("nf_tables: reject", StringComparison.Ordinal),
            "module" => Inputs.ModuleOffset(bytes) + 1000,
            _ => bytes.Length - 10,
        };
        bytes[offset] ^= 0x20;
        File.WriteAllBytes(path, bytes);
        Refused(await VerifyAsync(path), because);
    }

    [Fact]
    public async Task A_truncated_bundle_is_refused()
    {
        var path = await SignedBundleAsync();
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        Refused(await VerifyAsync(path), "truncated");
    }

    [Fact]
    public async Task Bytes_after_the_signature_are_refused()
    {
        var path = await SignedBundleAsync();
        File.AppendAllText(path, "x");
        Refused(await VerifyAsync(path), "unexpected bytes follow the signature block");
    }

    [Fact]
    public async Task A_file_that_is_not_a_bundle_is_refused()
    {
        var kernel = await Kernel;
        Refused(await VerifyAsync(kernel.Modules["kintsugi_fixture_cmdline_a"]), "not a Kintsugi bundle");
    }

    [Fact]
    public async Task A_bundle_signed_by_a_key_the_store_does_not_hold_is_refused()
    {
        var trusted = await SignedBundleAsync();
        Succeeded(await Kintsugi("keys", "generate", _dir["foreign.key"]));
        File.WriteAllText(_dir["fix.json"], DescriptionJson);
        var kernel = await Kernel;
        Succeeded(await Kintsugi("bundle", "sign", kernel.Modules["kintsugi_fixture_cmdline_b"], "--key",
            _dir["foreign.key"], "--description", _dir["fix.json"],
            "--build-id", kernel.Kernel.Target.BuildId.ToString(), "-o", _dir["foreign.bundle"]));
        Succeeded(await VerifyAsync(trusted));
        Refused(await VerifyAsync(_dir["foreign.bundle"]), "which is not in trust store");
    }

    [Fact]
    public async Task After_rotation_the_retired_key_is_refused_and_the_new_key_verifies()
    {
        var old = await SignedBundleAsync("old.key");
        var fresh = await SignedBundleAsync("new.key");
        Succeeded(await VerifyAsync(old));
        Succeeded(await Kintsugi("keys", "retire", _dir["old.key.pub"], "--trust", _dir["trust"]));
        Refused(await VerifyAsync(old), "which is retired");
        Succeeded(await VerifyAsync(fresh));

        var list = await Kintsugi("keys", "list", "--trust", _dir["trust"], "--json");
        Succeeded(list);
        using var json = JsonDocument.Parse(list.StandardOutput);
        var states = json.RootElement.EnumerateArray()
            .ToDictionary(k => k.GetProperty("id").GetString()!, k => k.GetProperty("state").GetString());
        Assert.Equal("retired", states[PublisherPublicKey.Load(_dir["old.key.pub"]).Id.ToString()]);
        Assert.Equal("trusted", states[PublisherPublicKey.Load(_dir["new.key.pub"]).Id.ToString()]);
        // Retirement is one-way.
        Assert.Equal((int)ExitCode.InputRefused,
            (await Kintsugi("keys", "trust", _dir["old.key.pub"], "--trust", _dir["trust"])).ExitCode);
    }

    [Fact]
    public async Task A_bundle_for_another_build_of_the_same_release_is_refused()
    {
        var kernel = await Kernel;
        var path = await SignedBundleAsync(buildId: "00112233445566778899aabbccddeeff00112233");
        Refused(await VerifyAsync(path, "--release", kernel.Release.Value, "--build-id",
            kernel.Kernel.Target.BuildId.ToString()), "same release, different build");
    }

    [Fact]
    public async Task A_description_with_an_unknown_severity_is_refused_before_signing()
    {
        var kernel = await Kernel;
        Succeeded(await Kintsugi("keys", "generate", _dir["k.key"]));
        File.WriteAllText(_dir["fix.json"], DescriptionJson.Replace("\"high\"", "\"severe\""));
        var result = await Kintsugi("bundle", "sign", kernel.Modules["kintsugi_fixture_cmdline_b"], "--key",
            _dir["k.key"], "--description", _dir["fix.json"],
            "--build-id", kernel.Kernel.Target.BuildId.ToString(), "-o", _dir["b.bundle"]);
        Refused(result, "severity 'severe' is not one of");
        Assert.False(File.Exists(_dir["b.bundle"]));
    }

    [Fact]
    public async Task A_module_that_is_not_a_livepatch_is_not_bundled()
    {
        var kernel = await Kernel;
        Succeeded(await Kintsugi("keys", "generate", _dir["k.key"]));
        File.WriteAllText(_dir["fix.json"], DescriptionJson);
        var result = await Kintsugi("bundle", "sign", kernel.Modules["kintsugi_fixture_plain"], "--key", _dir["k.key"],
            "--description", _dir["fix.json"],
            "--build-id", kernel.Kernel.Target.BuildId.ToString(), "-o", _dir["p.bundle"]);
        Refused(result, "is not a livepatch module");
    }
}
