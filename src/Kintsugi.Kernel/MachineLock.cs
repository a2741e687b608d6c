namespace Kintsugi.Kernel;

/// <summary>
/// One change to the machine's patches at a time: boot re-application, an agent's apply, its recovery.
/// An exclusive lock on /run/kintsugi/lock (a flock, released by the kernel when the holder dies, so a
/// killed process never leaves it held).
/// </summary>
public sealed class MachineLock : IDisposable
{
    private readonly FileStream _file;

    private MachineLock(FileStream file) => _file = file;

    public static MachineLock Acquire(MachinePaths paths, TimeSpan timeout, Action<string>? report = null)
    {
        Directory.CreateDirectory(paths.Runtime);
        var path = Path.Combine(paths.Runtime, "lock");
        var deadline = DateTime.UtcNow + timeout;
        var told = false;
        while (true)
        {
            try
            {
                return new MachineLock(
                new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                if (!told) report?.Invoke($"waiting for another kintsugi process to finish changing patches ({path})");
                told = true;
                Thread.Sleep(200);
            }
            catch (IOException e)
            {
                throw new LivepatchException($"another kintsugi process held {path} for more than " +
                    $"{timeout.TotalSeconds:0} s; try again when it has finished", ExitCode.Environment, e);
            }
        }
    }

    public void Dispose() => _file.Dispose();
}
