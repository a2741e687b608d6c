namespace Kintsugi.Kernel.Build.Symbols;

/// <summary>
/// Which of several same-named symbols of one object (vmlinux or a module) a livepatch means, as the kernel
/// counts them: 0 when the name is unique in that object, otherwise the 1-based position among the
/// symbols of that name in the object's kallsyms order (kernel Documentation/livepatch/livepatch.rst).
/// </summary>
public readonly record struct Sympos
{
    public int Value { get; }

    private Sympos(int value) => Value = value;

    public static Sympos Unique => default;

    public static Sympos At(int oneBasedPosition) => oneBasedPosition >= 1
        ? new Sympos(oneBasedPosition)
        : throw new ArgumentOutOfRangeException(nameof(oneBasedPosition), oneBasedPosition,
            "sympos positions count from 1");

    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
