using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>A bug is a bug: the differ never passes one off as a refusal of the user's objects (exit 3).</summary>
public class InternalErrorSpecification
{
    [Fact]
    public void An_exception_from_inside_the_diff_escapes_as_itself_not_as_a_refusal()
    {
        var (before, after) = DiffPairs.Compiled("numbered-static-renumbered");
        // The trace runs inside every step of the differ: a failing one stands for any defect there.
        var options = new DiffOptions(PatchedObjectName.Vmlinux, DiffPairs.Tag)
        {
            Trace = _ => throw new InvalidOperationException("a defect"),
        };

        var error = Assert.Throws<InvalidOperationException>(
            () => ObjectDiffer.Diff(ElfObject.Read(before), ElfObject.Read(after), options));

        Assert.Equal("a defect", error.Message);
    }
}
