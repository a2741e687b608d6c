using System.Buffers.Binary;
using System.Diagnostics;
using Kintsugi.User.Build;

namespace Kintsugi.User.Tests;

/// <summary>Compiles the C programs under Programs/ with the host's gcc into a fresh directory.</summary>
public sealed class CompiledPrograms : IDisposable
{
    public string Directory { get; } = System.IO.Directory.CreateTempSubdirectory("kintsugi-user-").FullName;

    public string Source(string name) => Path.Combine(AppContext.BaseDirectory, "Programs", name);

    public string Path_(string name) => Path.Combine(Directory, name);

    public string Gcc(string output, params string[] arguments)
    {
        var result = Process.Start(new ProcessStartInfo("gcc", [.. arguments, "-o", Path_(output)])
        { RedirectStandardError = true, WorkingDirectory = Directory })!;
        var errors = result.StandardError.ReadToEnd();
        result.WaitForExit();
        Assert.True(result.ExitCode == 0, $"gcc {string.Join(' ', arguments)}: {errors}");
        return Path_(output);
    }

    /// <summary>The loop program as shipped, and a patch replacing compute() with the -DFIXED build.</summary>
    public (string Program, UserPatch Patch) LoopProgramAndPatch()
    {
        var program = Gcc("loop", "-O2", "-g", "-pthread", Source("loop.c"));
        var fix = Gcc("loop-fixed.o", "-O2", "-g", "-pthread", "-DFIXED", "-ffunction-sections", "-fdata-sections",
            "-c", Source("loop.c"));
        return (program, PatchLinker.Link(program, fix, ["compute"], "loop-compute-fix"));
    }

    public void Dispose() => System.IO.Directory.Delete(Directory, recursive: true);
}

/// <summary>
/// A program running detached from the test process (started through a shell that exits at once), so that
/// the test runtime never reaps its ptrace stops; killed at the end.
/// </summary>
public sealed class RunningTarget : IDisposable
{
    private readonly string _log;

    public RunningTarget(string program, string arguments, string? libraryPath = null)
    {
        _log = Path.GetTempFileName();
        var environment = libraryPath is null ? "" : $"LD_LIBRARY_PATH={libraryPath} ";
        var shell = Process.Start(
            new ProcessStartInfo("/bin/sh", ["-c", $"{environment}exec {program} {arguments} >{_log} 2>&1 & echo $!"])
            { RedirectStandardOutput = true })!;
        Pid = int.Parse(shell.StandardOutput.ReadToEnd().Trim());
        shell.WaitForExit();
        var clock = Stopwatch.StartNew();
        while (!File.ReadAllText(_log).Contains("ready"))
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10) && Alive, $"{program} did not start: {Output}");
            Thread.Sleep(10);
        }
    }

    public int Pid { get; }

    public string Output => File.ReadAllText(_log);

    public bool Alive
    {
        get
        {
            try { return !File.ReadAllText($"/proc/{Pid}/stat").Split(") ")[1].StartsWith('Z'); }
            catch (IOException) { return false; }
        }
    }

    /// <summary>A 64-bit global of a loaded object, read from the process's memory.</summary>
    public long ReadGlobal(string objectPath, string symbol)
    {
        using var memory = new ProcessMemory(Pid);
        var maps = ProcessMaps.Read(Pid);
        var image = ElfImage.Load(objectPath);
        var loaded = LoadedObject.Find(maps, memory).Single(o => o.BuildId == image.BuildId);
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
        File.Delete(_log);
    }
}
