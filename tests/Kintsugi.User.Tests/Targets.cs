namespace Kintsugi.User.Tests;

/// <summary>Compiles the C programs under Programs/ with the host's gcc into a fresh directory.</summary>
public sealed class CompiledPrograms : IDisposable
{
    private readonly TemporaryDirectory _directory = new();

    public string Directory => _directory.Path;

    public string Source(string name) => Path.Combine(AppContext.BaseDirectory, "Programs", name);

    public string Path_(string name) => _directory.File(name);

    public string Gcc(string output, params string[] arguments)
    {
        var result = ExternalCommand.RunAsync("gcc", [.. arguments, "-o", Path_(output)], Directory)
            .GetAwaiter().GetResult();
        Assert.True(result.Succeeded, $"gcc {string.Join(' ', arguments)}: {result.StandardError}");
        return Path_(output);
    }

    /// <summary>The loop program as shipped, and a patch replacing compute() with the -DFIXED build.</summary>
    public (string Program, UserPatch Patch) LoopProgramAndPatch()
    {
        using var loop = new LoopProgram(Directory);
        return (loop.Program, loop.Patch("loop-compute-fix").Patch);
    }

    public void Dispose() => _directory.Dispose();
}
