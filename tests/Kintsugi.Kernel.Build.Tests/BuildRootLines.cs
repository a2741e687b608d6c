using Xunit.Abstractions;
using Xunit.Sdk;

namespace Kintsugi.Kernel.Build.Tests;

/// <summary>
/// Marks a specification class of a kernel line built in a build root (Debian 11's 5.10, Debian 13's 6.12).
/// Its <see cref="LineFactAttribute"/> and <see cref="LineTheoryAttribute"/> tests run only with
/// <c>KINTSUGI_BUILD_ROOT_LINES=1</c>: cold, a line makes its build root (mmdebstrap, 2 to 3 minutes) and
/// prepares its tree in it (6 to 10 minutes) before it builds and boots, too long for CI's budget; their
/// figures are in docs/benchmarks.md. The same specification on a Debian 12 line (no marker) always runs.
/// </summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class BuildRootLineAttribute : Attribute
{
    public const string Variable = "KINTSUGI_BUILD_ROOT_LINES";

    public static string? SkipReasonFor(Type testClass) =>
        testClass.IsDefined(typeof(BuildRootLineAttribute), inherit: false)
        && Environment.GetEnvironmentVariable(Variable) != "1"
            ? $"a Debian 11 or 13 line needs its build root and prepared tree (minutes each, cold): run with " +
                $"{Variable}=1"
            : null;
}

/// <summary>A fact, skipped in a <see cref="BuildRootLineAttribute"/> class unless those lines are asked for.</summary>
[XunitTestCaseDiscoverer("Kintsugi.Kernel.Build.Tests.LineGatedDiscoverer", "Kintsugi.Kernel.Build.Tests")]
public class LineFactAttribute : FactAttribute;

/// <summary>A theory, skipped in a <see cref="BuildRootLineAttribute"/> class unless those lines are asked
/// for.</summary>
[XunitTestCaseDiscoverer("Kintsugi.Kernel.Build.Tests.LineGatedDiscoverer", "Kintsugi.Kernel.Build.Tests")]
public class LineTheoryAttribute : TheoryAttribute;

/// <summary>Discovers a line-gated test as xunit's own fact or theory discoverer does, or as one skipped test
/// case.</summary>
public sealed class LineGatedDiscoverer(IMessageSink diagnostics) : IXunitTestCaseDiscoverer
{
    public IEnumerable<IXunitTestCase> Discover(ITestFrameworkDiscoveryOptions options, ITestMethod method,
        IAttributeInfo attribute)
    {
        var reason = BuildRootLineAttribute.SkipReasonFor(method.TestClass.Class.ToRuntimeType());
        if (reason is not null && attribute.GetNamedArgument<string>("Skip") is null)
            return [new SkippedTestCase(diagnostics, options.MethodDisplayOrDefault(),
                options.MethodDisplayOptionsOrDefault(), method, reason)];
        var theory = attribute is IReflectionAttributeInfo { Attribute: TheoryAttribute };
        return theory ? new TheoryDiscoverer(diagnostics).Discover(options, method, attribute)
            : new FactDiscoverer(diagnostics).Discover(options, method, attribute);
    }
}

/// <summary>A test case reported as skipped with a reason decided at discovery.</summary>
public sealed class SkippedTestCase : XunitTestCase
{
    private string _reason = "";

    [Obsolete("Called by the de-serializer; should only be called by deriving classes for de-serialization purposes")]
    public SkippedTestCase() { }

    public SkippedTestCase(IMessageSink diagnostics, TestMethodDisplay display, TestMethodDisplayOptions displayOptions,
        ITestMethod method, string reason)
        : base(diagnostics, display, displayOptions, method) => _reason = reason;

    protected override string GetSkipReason(IAttributeInfo factAttribute) => _reason;

    public override void Serialize(IXunitSerializationInfo data)
    {
        base.Serialize(data);
        data.AddValue("SkipReason", _reason);
    }

    public override void Deserialize(IXunitSerializationInfo data)
    {
        _reason = data.GetValue<string>("SkipReason");
        base.Deserialize(data);
    }
}
