using System.Diagnostics;
using Kintsugi.Testing;

namespace Kintsugi.Elf.Tests.Support;

/// <summary>Runs the toolchain (gcc-12, g++, as, ld, readelf, objdump) and returns what it printed.</summary>
internal static class Tool
{
    public static string Run(string program, params string[] arguments) => RunIn(null, program, arguments);

    public static string RunIn(string? workingDirectory, string program, params string[] arguments)
    {
        var result = TryRunIn(workingDirectory, program, arguments);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"{program} {string.Join(' ', arguments)} exited with " +
                $"{result.ExitCode}:\n{result.Error}\n{result.Output}");
        }

        return result.Output;
    }

    public static (int ExitCode, string Output, string Error) TryRunIn(string? workingDirectory, string program,
        params string[] arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["LC_ALL"] = "C";
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} did not finish within 60 s");
        }

        return (process.ExitCode, output, error.Result);
    }
}

/// <summary>Sources written and compiled in a test's <see cref="TemporaryDirectory"/>.</summary>
internal static class SourceFiles
{
    public static string Write(this TemporaryDirectory directory, string name, string contents)
    {
        string path = directory.File(name);
        System.IO.File.WriteAllText(path, contents);
        return path;
    }

    /// <summary>
    /// Compiles <paramref name="source"/> (C, or C++ when the name ends in .cpp, or assembly for .s) to an object file.
    /// </summary>
    public static string Compile(this TemporaryDirectory directory, string name, string source, params string[] flags)
    {
        string sourcePath = directory.Write(name, source);
        string objectPath = System.IO.Path.ChangeExtension(sourcePath, ".o");
        string compiler = name.EndsWith(".cpp", StringComparison.Ordinal) ? "g++-12" : "gcc-12";
        Tool.RunIn(directory.Path, compiler, [.. flags, "-c", sourcePath, "-o", objectPath]);
        return objectPath;
    }
}
