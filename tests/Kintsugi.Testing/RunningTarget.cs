using System.Buffers.Binary;
using System.Diagnostics;
using Kintsugi.User;

namespace Kintsugi.Testing;

/// <summary>
/// A program running detached from the test process (started through a shell that exits at once), so that
/// the test runtime never reaps its ptrace stops; ready when it prints "ready"; killed at the end.
/// </summary>
public sealed class RunningTarget : IDisposable
{
    private readonly TemporaryDirectory _directory = new();
    private string Log => _directory["output"];

    public RunningTarget(string program, string arguments, string? libraryPath = null)
    {
        var environment = libraryPath is null ? "" : $"LD_LIBRARY_PATH={libraryPath} ";
        using (var shell = Process.Start(
            new ProcessStartInfo("/bin/sh", ["-c", $"{environment}exec {program} {arguments} >{Log} 2>&1 & echo $!"])
            { RedirectStandardOutput = true })!)
        {
            Pid = int.Parse(shell.StandardOutput.ReadToEnd().Trim());
            shell.WaitForExit();
        }
        var clock = Stopwatch.StartNew();
        while (!(File.Exists(Log) && File.ReadAllText(Log).Contains("ready")))
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(10) || !Alive)
                throw new TimeoutException($"{program} did not start: {Output}");
            Thread.Sleep(10);
        }
    }

    public int Pid { get; }

    public string Output => File.Exists(Log) ? File.ReadAllText(Log) : "";

    public bool Alive
    {
        get
        {
            try { return !File.ReadAllText($"/proc/{Pid}/stat").Split(") ")[1].StartsWith('Z'); }
            catch (IOException) { return false; }
        }
    }

    /// <summary>A 64-bit global of a loaded object, read from the process's memory.</summary>
    public long ReadGlobal(string objectPath, string symbol) => ReadGlobal(Pid, objectPath, symbol);

    /// <summary>A 64-bit global of an object loaded by process <paramref name="pid"/>, read from its memory.</summary>
    public static long ReadGlobal(int pid, string objectPath, string symbol)
    {
        using var memory = new ProcessMemory(pid);
        var image = ElfImage.Load(objectPath);
        var loaded = LoadedObject.Find(ProcessMaps.Read(pid), memory).Single(o => o.BuildId == image.BuildId);
        var address = image.Symbols(dynamic: false).Single(s => s.Name == symbol).Value;
        return BinaryPrimitives.ReadInt64LittleEndian(memory.Read(loaded.LoadBase + address, 8));
    }

    public byte[] ReadFunction(string objectPath, string symbol)
    {
        using var memory = new ProcessMemory(Pid);
        var image = ElfImage.Load(objectPath);
        var loaded = LoadedObject.Find(ProcessMaps.Read(Pid), memory).Single(o => o.BuildId == image.BuildId);
        var s = image.Symbols(dynamic: false).Single(s => s.Name == symbol);
        return memory.Read(loaded.LoadBase + s.Value, (int)s.Size);
    }

    public string Maps => File.ReadAllText($"/proc/{Pid}/maps");

    public void Dispose()
    {
        try { Process.GetProcessById(Pid).Kill(); } catch (ArgumentException) { } catch (InvalidOperationException) { }
        _directory.Dispose();
    }
}
