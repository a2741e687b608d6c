using System.Diagnostics;

namespace Kintsugi.Kernel.Build;

/// <summary>
/// Times each stage and reports it as it starts and ends: the benchmark's breakdown and the user's progress.
/// </summary>
public sealed class StageClock(Action<string> progress)
{
    private readonly List<StageTiming> _stages = [];

    public IReadOnlyList<StageTiming> Stages => [.. _stages];

    public T Run<T>(string stage, Func<T> work) =>
        RunAsync(stage, () => Task.FromResult(work())).GetAwaiter().GetResult();

    public async Task RunAsync(string stage, Func<Task> work) =>
        await RunAsync(stage, async () => { await work(); return 0; });

    public async Task<T> RunAsync<T>(string stage, Func<Task<T>> work)
    {
        progress($"{stage}...");
        var watch = Stopwatch.StartNew();
        var result = await work();
        _stages.Add(new StageTiming(stage, Math.Round(watch.Elapsed.TotalSeconds, 2)));
        progress($"{stage}: done in {watch.Elapsed.TotalSeconds:0.0} s");
        return result;
    }
}
