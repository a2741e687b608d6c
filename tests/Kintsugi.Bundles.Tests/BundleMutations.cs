using System.Buffers.Binary;

namespace Kintsugi.Bundles.Tests;

/// <summary>
/// Random damage to a signed bundle, for the tamper specification and for bench/bundles (which times it).
/// </summary>
internal static class BundleMutations
{
    /// <summary>One random change to a copy of <paramref name="bundle"/>: a flipped, rewritten, removed, inserted or
    /// swapped byte, a truncation, trailing data or a length field off by a little or a lot.</summary>
    public static byte[] Mutate(byte[] bundle, Random random)
    {
        var layout = Samples.Layout(bundle);
        var bytes = (byte[])bundle.Clone();
        // Aim half the mutations at the small, structured parts (header, manifest, signature block).
        int Position() => random.Next(4) switch
        {
            0 => random.Next(Bundle.HeaderLength),
            1 => random.Next(layout.Manifest, layout.Module),
            2 => random.Next(layout.Signature, layout.End),
            _ => random.Next(bytes.Length),
        };
        switch (random.Next(9))
        {
            case 0: bytes[Position()] ^= (byte)(1 << random.Next(8)); return bytes;
            case 1: bytes[Position()] = (byte)random.Next(256); return bytes;
            case 2: return bytes[..random.Next(bytes.Length)];
            case 3:
                {
                    var at = Position();
                    var count = Math.Min(random.Next(1, 64), bytes.Length - at);
                    return [.. bytes[..at], .. bytes[(at + count)..]];
                }
            case 4:
                {
                    var at = Position();
                    var insert = new byte[random.Next(1, 64)];
                    random.NextBytes(insert);
                    return [.. bytes[..at], .. insert, .. bytes[at..]];
                }
            case 5:
                {
                    var extra = new byte[random.Next(1, 200)];
                    random.NextBytes(extra);
                    return [.. bytes, .. extra];
                }
            case 6:
                {
                    // A length field set to a random or nearby value.
                    var field = random.Next(3) switch { 0 => 12, 1 => 16, _ => 24 };
                    var value = random.Next(2) == 0 ? (uint)random.Next()
                        : BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(field)) + (uint)random.Next(-3, 4);
                    BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(field), value);
                    return bytes;
                }
            case 7:
                {
                    var a = Position();
                    var b = Position();
                    (bytes[a], bytes[b]) = (bytes[b], bytes[a]);
                    return bytes;
                }
            default:
                // Invert a byte, or (one time in four) rewrite it with its own value: a no-op that must still verify.
                var p = Position();
                bytes[p] = random.Next(4) == 0 ? bytes[p] : (byte)~bytes[p];
                return bytes;
        }
    }
}
