using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Robustness;

/// <summary>
/// The whole engine on one pair of inputs, as the builder runs it: read both objects, diff them, write the output
/// and read it back. Bounded in time and in allocation, so that a hang or a size taken on trust fails the case.
/// </summary>
internal static class Engine
{
    public enum Ending { Rejected, Refused, Result }

    /// <param name="Failure">Why the engine broke its contract, or null.</param>
    public sealed record Outcome(Ending Ending, string? Failure);

    public static readonly TimeSpan TimeLimit = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The two inputs are a few kilobytes; the engine holds a few copies and indexes, never what a header claims.
    /// </summary>
    public const long AllocationLimit = 64L << 20;

    private static readonly DiffOptions Options = new(PatchedObjectName.Vmlinux, "kintsugi_t_");

    public static Outcome Run(byte[] original, byte[] patched)
    {
        long allocated = 0;
        var work = Task.Run(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                return Contract(original, patched);
            }
            finally
            {
                allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            }
        });
        if (!work.Wait(TimeLimit))
            return new Outcome(Ending.Rejected, $"still running after {TimeLimit.TotalSeconds} s");
        var outcome = work.Result;
        if (outcome.Failure is null && allocated > AllocationLimit)
            return outcome with
            {
                Failure =
                $"allocated {allocated >> 20} MiB for inputs of {original.Length} and {patched.Length} bytes"
            };
        return outcome;
    }

    private static Outcome Contract(byte[] originalBytes, byte[] patchedBytes)
    {
        ElfObject original, patched;
        try
        {
            original = ElfObject.Read(originalBytes);
            patched = ElfObject.Read(patchedBytes);
        }
        catch (ElfFormatException e)
        {
            // The reader's safety net wraps what its validation missed; that is a gap, not a rejection.
            return new Outcome(Ending.Rejected, e.InnerException is null ? null
                : $"reader validation gap: {e.Message}");
        }
        catch (Exception e)
        {
            return new Outcome(Ending.Rejected, $"reading threw {Describe(e)}");
        }

        DiffResult result;
        try
        {
            result = ObjectDiffer.Diff(original, patched, Options);
        }
        catch (DiffException e)
        {
            // A refusal that wraps anything but malformed ELF is a validation gap: not a contract kept.
            return new Outcome(Ending.Refused, e.InnerException is null or ElfFormatException ? null
                : $"differ validation gap: {Describe(e.InnerException)}");
        }
        catch (Exception e)
        {
            return new Outcome(Ending.Refused, $"diffing threw {Describe(e)}");
        }

        if (result.Output is null) return new Outcome(Ending.Result, null);
        try
        {
            ElfObject.Read(result.Output.ToArray());
        }
        catch (Exception e)
        {
            return new Outcome(Ending.Result,
                $"the diff succeeded but writing or re-reading its output threw {Describe(e)}");
        }
        return new Outcome(Ending.Result, null);
    }

    private static string Describe(Exception e)
    {
        var frame = e.StackTrace?.Split('\n')
            .FirstOrDefault(l => l.Contains("Kintsugi.", StringComparison.Ordinal))?.Trim();
        return $"{e.GetType().Name}: {e.Message} [{frame}]";
    }
}
