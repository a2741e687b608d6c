namespace Kintsugi.Lab;

/// <summary>
/// How QEMU runs the guest: with KVM (<c>-accel kvm -cpu host</c>, several times faster) when /dev/kvm exists
/// and this process can open it read-write, else single-threaded TCG emulation. <c>KINTSUGI_LAB_ACCEL</c>
/// overrides: <c>tcg</c> always emulates, <c>kvm</c> insists on KVM (and fails saying why when it is unusable).
/// </summary>
public sealed record LabAccelerator(string Name, IReadOnlyList<string> QemuArguments, string Reason)
{
    public const string Variable = "KINTSUGI_LAB_ACCEL";
    public const string KvmDevice = "/dev/kvm";

    public bool IsKvm => Name == "kvm";

    public static LabAccelerator Select() => Select(KvmDevice, Environment.GetEnvironmentVariable(Variable));

    public static LabAccelerator Select(string kvmDevice, string? requested)
    {
        var mode = string.IsNullOrWhiteSpace(requested) ? "auto" : requested.Trim().ToLowerInvariant();
        if (mode is not ("auto" or "kvm" or "tcg"))
            throw new LabException($"{Variable}={requested} is not one of auto, kvm, tcg", ExitCode.Usage);
        if (mode == "tcg") return Tcg($"{Variable}=tcg");
        var problem = KvmProblem(kvmDevice);
        if (problem is null) return new("kvm", ["-accel", "kvm", "-cpu", "host"], $"{kvmDevice} is usable");
        if (mode == "kvm") throw new LabException($"{Variable}=kvm, but {problem}", ExitCode.Environment);
        return Tcg(problem);
    }

    // One TCG thread for all vCPUs: with multi-threaded TCG, a vCPU can run a stale translation of code
    // another vCPU just patched with int3 (text_poke_bp, used by static keys, ftrace and livepatch), and the
    // 6.12 kernel oopses on the stray int3. Seen in this lab; single-threaded TCG keeps cross-modified code
    // coherent. KVM runs the real CPU, which keeps it coherent itself.
    private static LabAccelerator Tcg(string reason) =>
        new("tcg", ["-accel", "tcg,thread=single", "-cpu", "max"], reason);

    private static string? KvmProblem(string device)
    {
        if (!File.Exists(device))
            return $"{device} does not exist (no KVM on this machine, or not passed into this container)";
        try
        {
            using var stream =
                new FileStream(device, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1, FileOptions.None);
            return null;
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            return $"{device} cannot be opened read-write ({e.Message}; add the user to the kvm group)";
        }
    }
}
