using System.Buffers.Binary;
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
    private readonly List<int> _processes = [];

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

    /// <summary>Starts the program with 4 workers, detached (a shell that exits at once), so no test runtime reaps its
    /// ptrace stops.</summary>
    public int Start()
    {
        var log = Path.Combine(_directory, $"out-{_processes.Count}");
        using var shell = Process.Start(new ProcessStartInfo("/bin/sh",
            ["-c", $"exec {Program} 4 >{log} 2>&1 & echo $!"])
        { RedirectStandardOutput = true })!;
        var pid = int.Parse(shell.StandardOutput.ReadToEnd().Trim());
        shell.WaitForExit();
        _processes.Add(pid);
        var clock = Stopwatch.StartNew();
        while (!(File.Exists(log) && File.ReadAllText(log).Contains("ready")))
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(10)) throw new TimeoutException($"{Program} did not start");
            Thread.Sleep(10);
        }
        return pid;
    }

    public long Global(int pid, string symbol)
    {
        using var memory = new ProcessMemory(pid);
        var image = ElfImage.Load(Program);
        var loaded = LoadedObject.Find(ProcessMaps.Read(pid), memory).Single(o => o.BuildId == image.BuildId);
        return BinaryPrimitives.ReadInt64LittleEndian(
            memory.Read(loaded.LoadBase + image.Symbols(dynamic: false).Single(s => s.Name == symbol).Value, 8));
    }

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
        using var gcc = Process.Start(new ProcessStartInfo("gcc", arguments) { RedirectStandardError = true })!;
        var errors = gcc.StandardError.ReadToEnd();
        gcc.WaitForExit();
        if (gcc.ExitCode != 0) throw new InvalidOperationException($"gcc {string.Join(' ', arguments)}: {errors}");
    }

    public void Dispose()
    {
        foreach (var pid in _processes)
            try
            {
                Process.GetProcessById(pid)
                .Kill();
            }
            catch (ArgumentException) { }
            catch (InvalidOperationException) { }
    }
}
