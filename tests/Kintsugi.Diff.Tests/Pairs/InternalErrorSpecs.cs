using System.Collections;
using Kintsugi.Elf;

namespace Kintsugi.Diff.Tests.Pairs;

/// <summary>A bug is a bug: the differ never passes one off as a refusal of the user's objects (exit 3).</summary>
public class InternalErrorSpecs
{
    [Fact]
    public void An_exception_from_inside_the_diff_escapes_as_itself_not_as_a_refusal()
    {
        var (before, after) = DiffPairs.Compiled("static-key-branch");
        var options = new DiffOptions(PatchedObjectName.Parse("pairs_mod"), "t_") { LinkedByModuleLoader = new BrokenSet() };

        var error = Assert.Throws<InvalidOperationException>(
            () => ObjectDiffer.Diff(ElfObject.Read(before), ElfObject.Read(after), options));

        Assert.Equal(BrokenSet.Message, error.Message);
    }

    /// <summary>Stands for any defect in code the differ runs: it fails when asked.</summary>
    private sealed class BrokenSet : IReadOnlySet<string>
    {
        public const string Message = "a defect";
        public int Count => throw new InvalidOperationException(Message);
        public bool Contains(string item) => throw new InvalidOperationException(Message);
        public IEnumerator<string> GetEnumerator() => throw new InvalidOperationException(Message);
        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
        public bool IsProperSubsetOf(IEnumerable<string> other) => throw new InvalidOperationException(Message);
        public bool IsProperSupersetOf(IEnumerable<string> other) => throw new InvalidOperationException(Message);
        public bool IsSubsetOf(IEnumerable<string> other) => throw new InvalidOperationException(Message);
        public bool IsSupersetOf(IEnumerable<string> other) => throw new InvalidOperationException(Message);
        public bool Overlaps(IEnumerable<string> other) => throw new InvalidOperationException(Message);
        public bool SetEquals(IEnumerable<string> other) => throw new InvalidOperationException(Message);
    }
}
