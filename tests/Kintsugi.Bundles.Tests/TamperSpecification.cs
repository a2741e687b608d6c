using System.Buffers.Binary;
using System.Text;
using Xunit.Abstractions;

namespace Kintsugi.Bundles.Tests;

/// <summary>Every change to a signed bundle is refused with a <see cref="BundleException"/> naming what
/// failed.</summary>
public sealed class TamperSpecification : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly Publisher _publisher = new();
    private readonly byte[] _bundle;

    public TamperSpecification(ITestOutputHelper output)
    {
        _output = output;
        _bundle = _publisher.Sign();
    }

    public void Dispose() => _publisher.Dispose();

    private byte[] Copy() => (byte[])_bundle.Clone();

    [Fact]
    public void A_changed_letter_in_the_manifest_is_a_bad_signature()
    {
        var bytes = Copy();
        var layout = Samples.Layout(bytes);
        var at = bytes.AsSpan(layout.Manifest, layout.Module - layout.Manifest).IndexOf("reject"u8) + layout.Manifest;
        bytes[at] = (byte)'R';

        var e = Samples.Refused(bytes, _publisher.Trust);

        Assert.Equal(BundleFailure.BadSignature, e.Failure);
        Assert.Contains("altered after signing", e.Message);
    }

    [Fact]
    public void A_raised_cumulative_level_is_a_bad_signature()
    {
        var bytes = Copy();
        var at = bytes.AsSpan().IndexOf("\"cumulativeLevel\":3"u8) + "\"cumulativeLevel\":"u8.Length;
        bytes[at] = (byte)'9';

        Assert.Equal(BundleFailure.BadSignature, Samples.Refused(bytes, _publisher.Trust).Failure);
    }

    [Fact]
    public void Every_flipped_byte_of_the_manifest_is_refused()
    {
        var layout = Samples.Layout(_bundle);
        for (var i = layout.Manifest; i < layout.Module; i++)
        {
            var bytes = Copy();
            bytes[i] ^= 0x20;
            Samples.Refused(bytes, _publisher.Trust);
        }
    }

    [Fact]
    public void A_flipped_byte_in_the_module_is_a_module_mismatch()
    {
        var layout = Samples.Layout(_bundle);
        var random = new Random(1);
        foreach (var offset in new[] { 0, 1, layout.Signature - layout.Module
            - 1 }.Concat(Enumerable.Range(0, 64).Select(_ => random.Next(layout.Signature - layout.Module))))
        {
            var bytes = Copy();
            bytes[layout.Module + offset] ^= 0x01;
            var e = Samples.Refused(bytes, _publisher.Trust);
            Assert.Equal(BundleFailure.ModuleMismatch, e.Failure);
        }
    }

    [Fact]
    public void Every_flipped_byte_of_the_signature_is_a_bad_signature()
    {
        var layout = Samples.Layout(_bundle);
        for (var i = layout.End - PublisherPublicKey.SignatureLength; i < layout.End; i++)
        {
            var bytes = Copy();
            bytes[i] ^= 0x80;
            Assert.Equal(BundleFailure.BadSignature, Samples.Refused(bytes, _publisher.Trust).Failure);
        }
    }

    [Fact]
    public void A_changed_key_id_in_the_signature_block_is_refused_as_malformed()
    {
        var bytes = Copy();
        bytes[Samples.Layout(bytes).Signature + 4] ^= 0x01;

        var e = Assert.Throws<BundleException>(() => Bundle.Read(bytes));

        Assert.Equal(BundleFailure.Malformed, e.Failure);
        Assert.Contains("but the manifest names key", e.Message);
    }

    [Fact]
    public void An_unknown_signature_algorithm_is_refused_as_unsupported()
    {
        var bytes = Copy();
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(Samples.Layout(bytes).Signature), 2);

        Assert.Equal(BundleFailure.UnsupportedVersion,
            Assert.Throws<BundleException>(() => Bundle.Read(bytes)).Failure);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(0xffff)]
    public void An_unsupported_format_version_is_refused_with_upgrade_advice(ushort version)
    {
        var bytes = Copy();
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), version);

        var e = Assert.Throws<BundleException>(() => Bundle.Read(bytes));

        Assert.Equal(BundleFailure.UnsupportedVersion, e.Failure);
        Assert.Contains($"format version {version} is not supported", e.Message);
        Assert.Contains("upgrade kintsugi", e.Message);
    }

    [Theory]
    [InlineData(10)]
    [InlineData(28)]
    public void Nonzero_flags_or_reserved_header_fields_are_malformed(int offset)
    {
        var bytes = Copy();
        bytes[offset] = 1;

        Assert.Equal(BundleFailure.Malformed, Assert.Throws<BundleException>(() => Bundle.Read(bytes)).Failure);
    }

    [Fact]
    public void Something_that_is_not_a_bundle_is_refused_as_such()
    {
        Assert.Equal(BundleFailure.NotABundle,
            Assert.Throws<BundleException>(() => Bundle.Read(Samples.Module)).Failure);
        Assert.Equal(BundleFailure.NotABundle, Assert.Throws<BundleException>(() => Bundle.Read("KINTSUGX"u8)).Failure);
    }

    public static TheoryData<string> Boundaries() =>
        ["empty", "inside magic", "after magic", "inside header", "after header", "inside manifest", "after manifest",
        "inside module", "after module", "inside signature block", "one byte short"];

    [Theory]
    [MemberData(nameof(Boundaries))]
    public void Truncation_at_a_structural_boundary_is_refused_as_truncated(string where)
    {
        var layout = Samples.Layout(_bundle);
        var length = where switch
        {
            "empty" => 0,
            "inside magic" => 4,
            "after magic" => 8,
            "inside header" => 20,
            "after header" => Bundle.HeaderLength,
            "inside manifest" => (layout.Manifest + layout.Module) / 2,
            "after manifest" => layout.Module,
            "inside module" => (layout.Module + layout.Signature) / 2,
            "after module" => layout.Signature,
            "inside signature block" => layout.Signature + 10,
            "one byte short" => layout.End - 1,
            _ => throw new ArgumentOutOfRangeException(nameof(where)),
        };

        var e = Assert.Throws<BundleException>(() => Bundle.Read(_bundle.AsSpan(0, length)));
        Assert.Equal(BundleFailure.Truncated, e.Failure);
        Assert.Contains("truncated", e.Message);

        using var stream = new ForwardOnlyStream(new MemoryStream(_bundle, 0, length));
        Assert.Equal(BundleFailure.Truncated, Assert.Throws<BundleException>(() => Bundle.Read(stream)).Failure);
    }

    [Fact]
    public void Truncation_at_random_points_is_refused_as_truncated()
    {
        var random = new Random(7);
        for (var i = 0; i < 300; i++)
        {
            var length = random.Next(_bundle.Length);
            Assert.Equal(BundleFailure.Truncated,
                Assert.Throws<BundleException>(() => Bundle.Read(_bundle.AsSpan(0, length))).Failure);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(84)]
    [InlineData(4096)]
    public void Appended_garbage_is_refused_as_trailing_data(int extra)
    {
        var bytes = _bundle.Concat(Enumerable.Repeat((byte)0x5a, extra)).ToArray();

        Assert.Equal(BundleFailure.TrailingData, Assert.Throws<BundleException>(() => Bundle.Read(bytes)).Failure);
        using var stream = new ForwardOnlyStream(new MemoryStream(bytes));
        Assert.Equal(BundleFailure.TrailingData, Assert.Throws<BundleException>(() => Bundle.Read(stream)).Failure);
    }

    [Fact]
    public void A_claimed_1_GB_module_in_a_1_KB_file_is_refused_without_allocating_it()
    {
        var bytes = Copy().AsSpan(0, 1024).ToArray();
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(16), 1UL << 30);

        var before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<BundleException>(() => Bundle.Read(bytes));
        using (var stream = new ForwardOnlyStream(new MemoryStream(bytes)))
            Assert.Throws<BundleException>(() => Bundle.Read(stream));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(BundleFailure.Malformed, e.Failure);
        Assert.Contains("1073741824-byte module", e.Message);
        Assert.True(allocated < 1024 * 1024, $"allocated {allocated} bytes");
    }

    [Fact]
    public void A_size_claim_within_limits_but_beyond_a_forward_only_stream_allocates_only_what_arrives()
    {
        var bytes = Copy().AsSpan(0, 1024).ToArray();
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(16), 60UL << 20);

        var before = GC.GetAllocatedBytesForCurrentThread();
        using var stream = new ForwardOnlyStream(new MemoryStream(bytes));
        var e = Assert.Throws<BundleException>(() => Bundle.Read(stream));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(BundleFailure.Truncated, e.Failure);
        Assert.True(allocated < 1024 * 1024, $"allocated {allocated} bytes for a 1 KB stream claiming 60 MB");
    }

    [Theory]
    [InlineData(12, 0u)]
    [InlineData(12, 2u * 1024 * 1024)]
    [InlineData(24, 83u)]
    [InlineData(24, 0xffffffffu)]
    public void Out_of_range_section_lengths_are_malformed(int offset, uint value)
    {
        var bytes = Copy();
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(offset), value);

        Assert.Equal(BundleFailure.Malformed, Assert.Throws<BundleException>(() => Bundle.Read(bytes)).Failure);
    }

    /// <summary>Builds an envelope around arbitrary manifest bytes and signs it with the trusted key, as a malicious or
    /// buggy signer could.</summary>
    private byte[] SignedEnvelope(byte[] manifest)
    {
        var module = Samples.Module;
        var bytes = new byte[Bundle.HeaderLength + manifest.Length + module.Length + Bundle.SignatureBlockLength];
        _bundle.AsSpan(0, Bundle.HeaderLength).CopyTo(bytes);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(12), (uint)manifest.Length);
        manifest.CopyTo(bytes, Bundle.HeaderLength);
        module.CopyTo(bytes, Bundle.HeaderLength + manifest.Length);
        var block = bytes.AsSpan(Bundle.HeaderLength + manifest.Length + module.Length);
        _bundle.AsSpan(Samples.Layout(_bundle).Signature, 4 + PublisherKeyId.Length).CopyTo(block);
        _publisher.Key.Sign(bytes.AsSpan(0, Bundle.HeaderLength + manifest.Length))
            .CopyTo(block[(4 + PublisherKeyId.Length)..]);
        return bytes;
    }

    private string ManifestText => Encoding.UTF8.GetString(Bundle.Read(_bundle).ManifestJson.Span);

    [Fact]
    public void The_test_envelope_builder_reproduces_a_valid_bundle()
    {
        var bytes = SignedEnvelope(Encoding.UTF8.GetBytes(ManifestText));

        BundleVerifier.Verify(Bundle.Read(bytes), _publisher.Trust);
    }

    [Theory]
    [InlineData("indented", "{\"target\"", "{ \"target\"")]
    [InlineData("trailing newline", "}}ZZ", "}}\n")]
    [InlineData("uppercase digest", "\"moduleSha256\":\"", "\"moduleSha256\":\"UPPER:")]
    [InlineData("unknown field", "\"cumulativeLevel\"", "\"extra\":1,\"cumulativeLevel\"")]
    [InlineData("duplicate field", "\"cumulativeLevel\":3", "\"cumulativeLevel\":3,\"cumulativeLevel\":3")]
    [InlineData("level as string", "\"cumulativeLevel\":3", "\"cumulativeLevel\":\"3\"")]
    [InlineData("level zero", "\"cumulativeLevel\":3", "\"cumulativeLevel\":0")]
    [InlineData("missing target", "\"target\":", "\"targetX\":")]
    [InlineData("time in Z form", "+00:00\"", "Z\"")]
    [InlineData("severity as number", "\"severity\":\"high\"", "\"severity\":3")]
    public void A_non_canonical_or_invalid_manifest_is_refused_even_when_properly_signed(string what, string find,
        string replace)
    {
        var text = ManifestText;
        if (find == "}}ZZ") text += "\n";
        else if (replace.Contains("UPPER:"))
        {
            var start = text.IndexOf(find, StringComparison.Ordinal) + find.Length;
            text = text[..start] + text.Substring(start, 64).ToUpperInvariant() + text[(start + 64)..];
        }
        else
        {
            Assert.Contains(find, text);
            text = text.Replace(find, replace, StringComparison.Ordinal);
        }

        var e = Assert.Throws<BundleException>(() => Bundle.Read(SignedEnvelope(Encoding.UTF8.GetBytes(text))));

        Assert.True(e.Failure == BundleFailure.InvalidManifest, $"{what}: {e.Failure} {e.Message}");
    }

    [Fact]
    public void Thousands_of_random_mutations_are_each_refused_or_are_the_unchanged_bundle()
    {
        var random = new Random(20250314);
        int refused = 0, unchanged = 0;
        var failures = new Dictionary<BundleFailure, int>();
        for (var i = 0; i < 4000; i++)
        {
            var mutated = BundleMutations.Mutate(_bundle, random);
            try
            {
                var verified = BundleVerifier.Verify(Bundle.Read(mutated), _publisher.Trust, Samples.Target);
                Assert.Equal(_bundle, mutated);
                Assert.Equal(Samples.Module, verified.Module.ToArray());
                unchanged++;
            }
            catch (BundleException e)
            {
                refused++;
                failures[e.Failure] = failures.GetValueOrDefault(e.Failure) + 1;
            }
            using var stream = new ForwardOnlyStream(new MemoryStream(mutated));
            try { Bundle.Read(stream); }
            catch (BundleException) { }
        }
        _output.WriteLine($"{unchanged} unchanged; refused: " +
            $"{string.Join(", ", failures.OrderBy(f => f.Key).Select(f => $"{f.Key} {f.Value}"))}");
        Assert.True(refused > 3500, $"{refused} refused, {unchanged} unchanged");
        // The mutations reach every structural check, not just the first one.
        Assert.Superset(
            new HashSet<BundleFailure> { BundleFailure.Truncated, BundleFailure.TrailingData, BundleFailure.Malformed,
            BundleFailure.InvalidManifest, BundleFailure.BadSignature, BundleFailure.ModuleMismatch,
            BundleFailure.UnsupportedVersion, BundleFailure.NotABundle }, failures.Keys.ToHashSet());
    }
}
