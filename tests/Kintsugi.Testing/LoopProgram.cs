using System.Diagnostics;
using Kintsugi.User;
using Kintsugi.User.Build;

namespace Kintsugi.Testing;

/// <summary>
/// The multi-threaded loop program of the user-space tests (tests/Kintsugi.User.Tests/Programs/loop.c, copied next to
/// the test assembly as Programs/loop.c), compiled with the host's gcc, and patches of its compute() built from the
/// -DFIXED compile: real processes and real user-space patches for the delivery tests. Processes it starts are killed
/// when it is disposed.
/// </summary>
public sealed class LoopProgram : IDisposable
{
    /// <summary>
    /// The xunit collection of the specifications whose agent patches or reverts every process of the loop program
    /// on the machine: each class compiles the same program (the same build-id), so run side by side one class's agent
    /// would patch or revert the other's processes.
    /// </summary>
    public const string AgentCollection = "agents over the loop program's processes";

    private readonly string _directory;
    private readonly List<RunningTarget> _processes = [];

    public LoopProgram(string directory)
    {
        _directory = directory;
        Directory.CreateDirectory(directory);
        var source = Path.Combine(AppContext.BaseDirectory, "Programs", "loop.c");
        Program = Path.Combine(directory, "loop");
        Gcc("-O2", "-g", "-pthread", source, "-o", Program);
        Gcc("-O2", "-g", "-pthread", "-DFIXED", "-ffunction-sections", "-fdata-sections", "-c", source, "-o",
            Path.Combine(directory, "loop-fixed.o"));
    }

    public string Program { get; }

    /// <summary>A patch replacing compute() with the fixed one; patches with different names are different
    /// patches.</summary>
    public (UserPatch Patch, byte[] Bytes) Patch(string name)
    {
        var patch = PatchLinker.Link(Program, Path.Combine(_directory, "loop-fixed.o"), ["compute"], name);
        var path = Path.Combine(_directory, name + ".patch");
        patch.Save(path);
        return (patch, File.ReadAllBytes(path));
    }

    /// <summary>Starts the program with 4 workers, detached (<see cref="RunningTarget"/>); returns its pid.</summary>
    public int Start()
    {
        var target = new RunningTarget(Program, "4");
        _processes.Add(target);
        return target.Pid;
    }

    public long Global(int pid, string symbol) => RunningTarget.ReadGlobal(pid, Program, symbol);

    /// <summary>
    /// Whether every thread of the process runs only the fixed (or only the shipped) compute() now: its counter grows
    /// by a thousand calls while the other stays still. Throws when not.
    /// </summary>
    public void RunsOnly(int pid, bool fixedCode)
    {
        var (counter, other) = fixedCode ? ("new_calls", "old_calls") : ("old_calls", "new_calls");
        var frozen = Global(pid, other);
        var start = Global(pid, counter);
        var clock = Stopwatch.StartNew();
        while (Global(pid, counter) < start + 1000)
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(10))
                throw new InvalidOperationException($"process {pid}: {counter} does not grow");
            Thread.Sleep(10);
        }
        if (Global(pid, other) != frozen) throw new InvalidOperationException($"process {pid}: {other} grew too: it " +
            $"does not run only the {counter[..3]} code");
    }

    private static void Gcc(params string[] arguments)
    {
        var gcc = ExternalCommand.Run("gcc", arguments);
        if (!gcc.Succeeded)
            throw new InvalidOperationException($"gcc {string.Join(' ', arguments)}: {gcc.StandardError}");
    }

    public void Dispose()
    {
        foreach (var process in _processes) process.Dispose();
    }
}
