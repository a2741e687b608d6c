using Kintsugi.Bundles;
using Kintsugi.Kernel;
using Kintsugi.User;

namespace Kintsugi.Agent;

/// <summary>A process running a user-space patch.</summary>
/// <param name="Address">Where the patch's region is mapped in that process.</param>
public sealed record UserPatchProcess(int Pid, string Command, ulong Address);

/// <summary>
/// One user-space patch running on this machine, as <c>kintsugi status --json</c> (<c>userPatches</c>) and <c>kintsugi
/// user list --json</c> show it (fields in docs/user-space.md). Read from the processes' memory, where the patch is
/// recorded (the tool keeps no state about processes), and joined with the agent's installed bundle for the object
/// when that bundle carries this very patch: then the level, the bundle and the CVEs it fixes are known.
/// </summary>
/// <param name="Name">The patch's name.</param>
/// <param name="PatchId">SHA-256 of the patch's canonical form (how it is recognised in memory).</param>
/// <param name="BuildId">The patched object's GNU build-id.</param>
/// <param name="Object">The patched object's file name as the processes map it.</param>
/// <param name="Functions">How many functions it redirects.</param>
/// <param name="Level">The cumulative level of the agent's bundle carrying it, or null (applied by hand).</param>
/// <param name="Bundle">That bundle's SHA-256, or null.</param>
/// <param name="Cves">The CVEs that bundle fixes (empty when unknown).</param>
/// <param name="Processes">The processes running it.</param>
/// <param name="Package">The Debian binary package shipping the object, as that bundle names it, or null.</param>
/// <param name="PackageVersion">That package's version, or null.</param>
/// <param name="Unpatched">Processes that map the same object without this patch (yet): the vulnerable code still runs
/// there.</param>
public sealed record UserPatchStatus(string Name, string PatchId, BuildId BuildId, string? Object, int Functions,
    int? Level, string? Bundle,
    IReadOnlyList<string> Cves, IReadOnlyList<UserPatchProcess> Processes, string? Package = null,
    string? PackageVersion = null, IReadOnlyList<int>? Unpatched = null);

public static class UserPatchStatuses
{
    /// <summary>The agent's directory of installed user-space bundles on a machine.</summary>
    public static string AgentDirectory(MachinePaths paths) => Path.Combine(paths.State, "agent", "user");

    /// <summary>
    /// Every user-space patch applied in the given processes (default: every process), grouped by patch, joined with
    /// the bundles installed in <paramref name="agentDirectory"/>.
    /// </summary>
    public static IReadOnlyList<UserPatchStatus> Read(string agentDirectory, IReadOnlyList<int>? pids = null)
    {
        var found = pids is null ? UserPatcher.ListAll()
            : [.. pids.Select(pid => (Pid: pid, Command: CommandOf(pid), Patches: UserPatcher.List(pid)))];
        var bundles = new Dictionary<BuildId, (string PatchId, Bundle Bundle)>();
        foreach (var (id, bundle) in new UserDelivery(agentDirectory, PatcherOptions.Default, _ => { }).Installed())
        {
            try { bundles[id] = (UserPatch.Parse(bundle.Module.Span, "an installed bundle").IdHex, bundle); }
            catch (UserPatchException) { }   // not a patch this build reads: nothing to join
        }
        var statuses = new List<UserPatchStatus>();
        foreach (var group in found.SelectMany(p => p.Patches.Select(patch => (p.Pid, p.Command, Patch: patch)))
            .GroupBy(x => x.Patch.PatchId))
        {
            var first = group.First().Patch;
            var carried = bundles.TryGetValue(first.Target, out var b) && b.PatchId == first.PatchId ? b.Bundle : null;
            statuses.Add(new UserPatchStatus(first.Name, first.PatchId, first.Target,
                ObjectName(group.First().Pid, first.Target) ?? carried?.Manifest.Object?.Name,
                first.Functions.Count, carried?.Manifest.CumulativeLevel,
                carried is null ? null : Sha256Digest.Of(carried.ToArray()).ToString(),
                carried is null ? [] : [.. carried.Manifest.Cves.Select(c => c.Value).Order(StringComparer.Ordinal)],
                [.. group.Select(x => new UserPatchProcess(x.Pid, x.Command, x.Patch.Start)).OrderBy(p => p.Pid)],
                carried?.Manifest.Object?.Package, carried?.Manifest.Object?.PackageVersion,
                [.. UserPatcher.ProcessesMapping(first.Target).Except(group.Select(x => x.Pid))
                    .Where(pid => pids is null || pids.Contains(pid)).Order()]));
        }
        return [.. statuses.OrderBy(s => s.Object, StringComparer.Ordinal).ThenBy(s => s.Name, StringComparer.Ordinal)];
    }

    private static string? ObjectName(int pid, BuildId id)
    {
        try
        {
            using var memory = new ProcessMemory(pid);
            return LoadedObject.Find(ProcessMaps.Read(pid), memory).FirstOrDefault(o => o.BuildId == id)?.FileName;
        }
        catch (Exception e) when (e is UserPatchException or IOException
            or UnauthorizedAccessException)
        { return null; }
    }

    private static string CommandOf(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return ""; }
    }
}
