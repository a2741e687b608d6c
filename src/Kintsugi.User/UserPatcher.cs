using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;

namespace Kintsugi.User;

/// <summary>How long to wait: for a thread to stop, and for busy threads to leave the code being replaced.</summary>
public sealed record PatcherOptions(TimeSpan BusyTimeout, TimeSpan StopTimeout)
{
    public static PatcherOptions Default { get; } = new(TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(2));
}

/// <summary>
/// Applies and reverts user-space patches in running processes. Each process goes through the same phases:
/// <b>inspect</b> (without stopping it: the target object and its build-id, the shipped code of every replaced
/// function, already-applied patches, imports, a <c>syscall</c> instruction to borrow), then attempts of
/// <b>freeze</b> (every thread stopped), <b>check</b> (no thread in or returning into replaced code), and either
/// <b>install</b> (map a region within ±2 GiB, write the relocated code, then the entry jumps) and <b>release</b>,
/// or release and retry after a short wait while the process runs. A failure after the freeze restores every
/// byte written and unmaps the region before the threads are released.
/// Synchronous on purpose: ptrace belongs to the OS thread that attached.
/// </summary>
public sealed class UserPatcher(PatcherOptions options, Action<string>? log = null)
{
    private const long SysMmap = 9, SysMunmap = 11;
    private const int MaxStepsOut = 500;
    private const ulong ProtReadExec = 0x1 | 0x4;
    private const ulong MapPrivateAnonymousFixedNoReplace = 0x02 | 0x20 | 0x100000;

    public UserPatcher() : this(PatcherOptions.Default) { }

    /// <summary>
    /// Applies <paramref name="patch"/>; with <paramref name="replacing"/>, the applied patches it selects (a lower
    /// level of the same object, say) are taken out in the same freeze: each entry goes straight from the old patch's
    /// code to the new one's, so no thread ever runs the shipped code between the two.
    /// </summary>
    public ProcessResult Apply(int pid, UserPatch patch, Func<AppliedPatch, bool>? replacing = null)
    {
        var command = CommandOf(pid);
        try
        {
            using var memory = new ProcessMemory(pid, writable: true);
            CheckPatchable(pid);
            var maps = ProcessMaps.Read(pid);
            var objects = LoadedObject.Find(maps, memory);
            var target = objects.FirstOrDefault(o => o.BuildId == patch.Target.BuildId);
            if (target is null)
                return new(pid, command, ProcessOutcome.NotTarget, 0, 0, 0, 0,
                    $"does not map {patch.Target.Object} with build-id {patch.Target.BuildId}");
            var applied = PatchRegion.Find(maps, memory);
            if (applied.Any(p => p.PatchId == patch.IdHex))
                return new(pid, command, ProcessOutcome.AlreadyApplied, 0, 0, 0, 0, null);
            var replaced = replacing is null ? [] : applied.Where(replacing).ToList();
            var redirected = replaced.SelectMany(p => p.Functions).ToDictionary(f => f.Entry);
            var entries = VerifyShippedCode(patch, target, memory, redirected);
            var imports = ResolveImports(pid, maps, objects, patch);
            var syscall = FindSyscallInstruction(maps, memory);
            var ranges = patch.Functions.Select(f =>
                new CodeRange(target.LoadBase + f.Address, target.LoadBase + f.Address + f.Size, f.Name))
                .Concat(replaced.Select(a => new CodeRange(a.Start, a.End, $"the code of patch {a.Name}"))).ToList();
            return Freeze(pid, command, ranges, memory, (traced, frozenMaps) =>
            {
                if (!LoadedObject.Find(frozenMaps, memory)
                    .Any(o => o.BuildId == target.BuildId && o.LoadBase == target.LoadBase))
                    throw new UserPatchException($"{target.FileName} was unloaded or moved while Kintsugi prepared " +
                        $"the patch", ExitCode.TransitionFailed);
                Install(traced, frozenMaps, memory, patch, target, entries, imports, syscall, replaced);
            }, ProcessOutcome.Applied);
        }
        catch (UserPatchException e)
        {
            return new(pid, command, Exited(pid, e) ? ProcessOutcome.Exited : ProcessOutcome.Failed, 0, 0, 0, 0,
                e.Message);
        }
    }

    /// <summary>Reverts the applied patches <paramref name="select"/> chooses (every Kintsugi patch when
    /// null).</summary>
    public ProcessResult Revert(int pid, Func<AppliedPatch, bool>? select = null)
    {
        var command = CommandOf(pid);
        try
        {
            using var memory = new ProcessMemory(pid, writable: true);
            CheckPatchable(pid);
            var maps = ProcessMaps.Read(pid);
            var applied = PatchRegion.Find(maps, memory).Where(select ?? (_ => true)).ToList();
            if (applied.Count == 0) return new(pid, command, ProcessOutcome.NotApplied, 0, 0, 0, 0, null);
            var syscall = FindSyscallInstruction(maps, memory);
            var ranges = applied.Select(a => new CodeRange(a.Start, a.End, $"the code of patch {a.Name}")).ToList();
            return Freeze(pid, command, ranges, memory, (traced, _) => Remove(traced, memory, applied, syscall),
                ProcessOutcome.Reverted);
        }
        catch (UserPatchException e)
        {
            return new(pid, command, Exited(pid, e) ? ProcessOutcome.Exited : ProcessOutcome.Failed, 0, 0, 0, 0,
                e.Message);
        }
    }

    /// <summary>The Kintsugi patches applied in a process, read from its memory.</summary>
    public static IReadOnlyList<AppliedPatch> List(int pid)
    {
        using var memory = new ProcessMemory(pid);
        return PatchRegion.Find(ProcessMaps.Read(pid), memory);
    }

    /// <summary>The processes (other than this one) that map an object with the build-id.</summary>
    public static IReadOnlyList<int> ProcessesMapping(BuildId buildId)
    {
        var found = new List<int>();
        var known = new Dictionary<(string, ulong), BuildId?>();
        foreach (var pid in AllProcesses())
        {
            try
            {
                using var memory = new ProcessMemory(pid);
                if (LoadedObject.Find(ProcessMaps.Read(pid), memory, buildId, known).Any(o => o.BuildId == buildId))
                    found.Add(pid);
            }
            catch (UserPatchException) { }   // exited, or a kernel thread
            catch (IOException) { }
        }
        return found;
    }

    /// <summary>
    /// Every ELF object with a build-id that a process on the machine maps (other than this process), with the
    /// processes that map it: what the agent reports, so that the server offers patches for what actually runs. Each
    /// object (by device and inode) has its build-id read from memory once per scan.
    /// </summary>
    public static IReadOnlyList<MappedObject> Inventory()
    {
        var known = new Dictionary<(string, ulong), (BuildId Id, string Name)?>();
        var found = new Dictionary<BuildId, (string Name, List<int> Pids)>();
        foreach (var pid in AllProcesses())
        {
            try
            {
                var maps = ProcessMaps.Read(pid);
                var firsts =
                    maps.Mappings.Where(m => m.IsFile && m.Offset == 0).DistinctBy(m => (m.Device, m.Inode)).ToList();
                if (firsts.Any(m => !known.ContainsKey((m.Device, m.Inode))))
                {
                    using var memory = new ProcessMemory(pid);
                    var loaded = LoadedObject.Find(maps, memory).ToDictionary(o => (o.Device, o.Inode));
                    foreach (var m in firsts.Where(m => !known.ContainsKey((m.Device, m.Inode))))
                        known[(m.Device, m.Inode)] = loaded.GetValueOrDefault(
                            (m.Device, m.Inode)) is { BuildId: { } id } o ? (id, o.FileName) : null;
                }
                foreach (var m in firsts)
                {
                    if (known[(m.Device, m.Inode)] is not { } entry) continue;
                    if (!found.TryGetValue(entry.Id, out var seen)) found[entry.Id] = seen = (entry.Name, []);
                    if (!seen.Pids.Contains(pid)) seen.Pids.Add(pid);
                }
            }
            catch (UserPatchException) { }   // exited, or a kernel thread
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }   // not ours to read (a sandbox's init, say): not patchable either
        }
        return [.. found.Select(kv => new MappedObject(kv.Key, kv.Value.Name, kv.Value.Pids))
            .OrderBy(o => o.Name, StringComparer.Ordinal)];
    }

    /// <summary>Every process with a Kintsugi patch applied.</summary>
    public static IReadOnlyList<(int Pid, string Command, IReadOnlyList<AppliedPatch> Patches)> ListAll()
    {
        var found = new List<(int, string, IReadOnlyList<AppliedPatch>)>();
        foreach (var pid in AllProcesses())
        {
            try
            {
                var patches = List(pid);
                if (patches.Count > 0) found.Add((pid, CommandOf(pid), patches));
            }
            catch (UserPatchException) { }
            catch (IOException) { }
        }
        return found;
    }

    private static IEnumerable<int> AllProcesses() =>
        Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit))
        .Select(n => int.Parse(n!))
            .Where(pid => pid != Environment.ProcessId).Order().ToList();

    private ProcessResult Freeze(int pid, string command, IReadOnlyList<CodeRange> ranges, ProcessMemory memory,
        Action<TracedProcess, ProcessMaps> change, ProcessOutcome success)
    {
        var overall = Stopwatch.StartNew();
        var totalPause = TimeSpan.Zero;
        var backoff = TimeSpan.FromMilliseconds(1);
        for (var attempt = 1; ; attempt++)
        {
            var pause = Stopwatch.StartNew();
            string? busy;
            int threads;
            using (var traced = TracedProcess.Attach(pid, options.StopTimeout))
            {
                threads = traced.Threads.Count;
                var frozenMaps = ProcessMaps.Read(pid);
                // Threads caught inside a replaced function are stepped out of it (usually a few instructions
                // from returning) while the others stay stopped; then every thread is checked.
                traced.StepOutOf(ranges, MaxStepsOut);
                var unwinder = new StackUnwinder(frozenMaps, memory);
                busy = traced.Threads.Select(t => StackCheck.Busy(t, frozenMaps, memory, ranges, unwinder))
                    .FirstOrDefault(b => b is not null);
                if (busy is null)
                {
                    try { change(traced, frozenMaps); }
                    catch (UserPatchException e)
                    {
                        traced.Dispose();
                        totalPause += pause.Elapsed;
                        return new(pid, command, ProcessOutcome.Failed, pause.Elapsed.TotalMilliseconds,
                            totalPause.TotalMilliseconds, attempt, threads, e.Message);
                    }
                    traced.Dispose();
                    totalPause += pause.Elapsed;
                    return new(pid, command, success, pause.Elapsed.TotalMilliseconds, totalPause.TotalMilliseconds,
                        attempt, threads, null);
                }
            }
            totalPause += pause.Elapsed;
            log?.Invoke($"process {pid}: {busy}; retrying");
            if (overall.Elapsed + backoff > options.BusyTimeout)
                return new(pid, command, ProcessOutcome.Busy, 0, totalPause.TotalMilliseconds, attempt, threads,
                    $"{busy} (still after {attempt} attempts in {overall.Elapsed.TotalSeconds:0.0} s); nothing was " +
                    $"changed. " +
                    "A function that never returns (a thread's main loop) cannot be replaced at its entry; otherwise " +
                    "retry when the process is less busy");
            Thread.Sleep(backoff);
            backoff = TimeSpan.FromMilliseconds(Math.Min(backoff.TotalMilliseconds * 2, 50));
        }
    }

    /// <summary>
    /// Maps the region, writes the relocated code and then each entry's jump; the entries of the
    /// <paramref name="replaced"/> patches go from their jump straight to the new one (or back to the shipped bytes
    /// when the new patch leaves that function alone), and their regions are unmapped last. Every entry is checked
    /// before it is written; a failure restores every byte written and unmaps the new region.
    /// </summary>
    private static void
        Install(TracedProcess traced, ProcessMaps maps, ProcessMemory memory, UserPatch patch, LoadedObject target,
        IReadOnlyList<byte[]> entries, IReadOnlyDictionary<string, ulong> imports, ulong syscall,
        IReadOnlyList<AppliedPatch> replaced)
    {
        CheckJumps(memory, replaced, "nothing was changed");
        var size = PatchRegion.RegionSize(patch);
        var region = 0UL;
        foreach (var candidate in Placement.Candidates(maps, target.Start, target.End, size).Take(8))
        {
            var mapped = traced.Syscall(syscall, SysMmap, candidate, size, ProtReadExec,
                MapPrivateAnonymousFixedNoReplace, ulong.MaxValue, 0);
            if (mapped == (long)candidate) { region = candidate; break; }
            // a kernel without MAP_FIXED_NOREPLACE
            if (mapped > 0) traced.Syscall(syscall, SysMunmap, (ulong)mapped, size);
        }
        if (region == 0)
            throw new UserPatchException($"no free address range of {size} bytes within ±2 GiB of {target.FileName}; " +
                $"nothing was changed", ExitCode.TransitionFailed);
        var redirected = replaced.SelectMany(p => p.Functions).ToDictionary(f => f.Entry);
        var written = new List<(ulong Address, byte[] Before)>();
        try
        {
            var saved = entries.Select(e => e[..UserPatch.RedirectSize]).ToList();
            var header = PatchRegion.Header(patch, region, target.LoadBase, saved);
            var codeBase = region + (ulong)header.Length;
            memory.Write(region + (ulong)header.Length, Relocate(patch, codeBase, target.LoadBase, imports));
            memory.Write(region, header);
            for (var i = 0; i < patch.Functions.Count; i++)
            {
                var entry = target.LoadBase + patch.Functions[i].Address;
                var expected = redirected.Remove(entry, out var old) ? PatchRegion.Jump(entry, old.Replacement)
                    : saved[i];
                if (!memory.Read(entry, UserPatch.RedirectSize).AsSpan().SequenceEqual(expected))
                    throw new UserPatchException($"the entry of {patch.Functions[i].Name} changed while Kintsugi " +
                        $"prepared the patch", ExitCode.TransitionFailed);
                written.Add((entry, expected));
                memory.Write(entry, PatchRegion.Jump(entry, codeBase + patch.Functions[i].Replacement));
            }
            // What the replaced patches redirected and the new one does not: back to the shipped code.
            foreach (var f in redirected.Values)
            {
                written.Add((f.Entry, PatchRegion.Jump(f.Entry, f.Replacement)));
                memory.Write(f.Entry, f.SavedBytes);
            }
        }
        catch
        {
            foreach (var (address, before) in Enumerable.Reverse(written)) memory.Write(address, before);
            traced.Syscall(syscall, SysMunmap, region, size);
            throw;
        }
        Unmap(traced, replaced, syscall);
    }

    /// <summary>Refuses unless every entry of the patches still jumps to their code.</summary>
    private static void CheckJumps(ProcessMemory memory, IReadOnlyList<AppliedPatch> patches, string outcome)
    {
        foreach (var patch in patches)
            foreach (var f in patch.Functions)
                if (!memory.Read(f.Entry, UserPatch.RedirectSize).AsSpan()
                    .SequenceEqual(PatchRegion.Jump(f.Entry, f.Replacement)))
                    throw new UserPatchException($"the entry at 0x{f.Entry:x} no longer jumps to patch {patch.Name} " +
                        $"(changed by something else); {outcome}", ExitCode.TransitionFailed);
    }

    private static void Unmap(TracedProcess traced, IReadOnlyList<AppliedPatch> patches, ulong syscall)
    {
        foreach (var patch in patches)
        {
            var result = traced.Syscall(syscall, SysMunmap, patch.Start, patch.Size);
            if (result != 0)
                throw new UserPatchException($"patch {patch.Name} was taken out but its memory could not be " +
                    $"unmapped: {Native.ErrnoMessage((int)-result)}", ExitCode.TransitionFailed);
        }
    }

    private static void
        Remove(TracedProcess traced, ProcessMemory memory, IReadOnlyList<AppliedPatch> applied, ulong syscall)
    {
        // Everything is checked before anything is written: a refusal leaves the process as it was.
        CheckJumps(memory, applied, "nothing was reverted");
        foreach (var f in applied.SelectMany(p => p.Functions)) memory.Write(f.Entry, f.SavedBytes);
        Unmap(traced, applied, syscall);
    }

    /// <summary>The patch code with every relocation filled in for this process and this region.</summary>
    internal static byte[]
        Relocate(UserPatch patch, ulong codeBase, ulong loadBase, IReadOnlyDictionary<string, ulong> imports)
    {
        var code = patch.Code.ToArray();
        foreach (var r in patch.Relocations)
        {
            var symbol = r.Base switch
            {
                RelocationBase.Patch => codeBase + r.Value,
                RelocationBase.Object => loadBase + r.Value,
                _ => imports[r.Symbol!] + r.Value,
            };
            var value = symbol + (ulong)r.Addend;
            if (r.Kind == RelocationKind.Absolute64)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(code.AsSpan((int)r.Offset), value);
                continue;
            }
            var displacement = (long)(value - (codeBase + r.Offset));
            if (displacement is < int.MinValue or > int.MaxValue)
                throw new UserPatchException($"a 32-bit reference of the patch to {r.Symbol ?? r.Base.ToString()} is " +
                    $"out of reach from the patch region; " +
                    "nothing was changed", ExitCode.TransitionFailed);
            BinaryPrimitives.WriteInt32LittleEndian(code.AsSpan((int)r.Offset), (int)displacement);
        }
        return code;
    }

    /// <summary>Checks that every replaced function is exactly the shipped code (once the entries a patch being
    /// replaced redirects have their saved bytes back); returns that code.</summary>
    private static IReadOnlyList<byte[]> VerifyShippedCode(UserPatch patch, LoadedObject target, ProcessMemory memory,
        IReadOnlyDictionary<ulong, RedirectedFunction> redirected)
    {
        var entries = new List<byte[]>();
        foreach (var f in patch.Functions)
        {
            var code = memory.Read(target.LoadBase + f.Address, (int)f.Size);
            if (redirected.TryGetValue(target.LoadBase + f.Address, out var old)) old.SavedBytes.CopyTo(code, 0);
            if (Convert.ToHexStringLower(SHA256.HashData(code)) != f.OriginalSha256)
            {
                var jump =
                    code[0] == 0xe9 ? " (its entry is a jump: another patch replaced it; see kintsugi user list)" : "";
                throw new UserPatchException($"{f.Name} in {target.FileName} is not the code the patch was built " +
                    $"against{jump}; nothing was changed");
            }
            entries.Add(code);
        }
        return entries;
    }

    private static Dictionary<string,
        ulong> ResolveImports(int pid, ProcessMaps maps, IReadOnlyList<LoadedObject> objects, UserPatch patch)
    {
        var names =
            patch.Relocations.Where(r => r.Base == RelocationBase.Import).Select(r => r.Symbol!).Distinct().ToList();
        var resolved = new Dictionary<string, ulong>();
        if (names.Count == 0) return resolved;
        var resolver = new ImportResolver(pid, maps, objects);
        foreach (var name in names) resolved[name] = resolver.Resolve(name);
        return resolved;
    }

    /// <summary>An existing <c>syscall</c> instruction (0f 05) the applier points a stopped thread at: the vDSO's
    /// first.</summary>
    private static ulong FindSyscallInstruction(ProcessMaps maps, ProcessMemory memory)
    {
        foreach (var mapping in maps.Mappings.Where(m => m.Executable && m.Readable)
            .OrderBy(m => m.Path == "[vdso]" ? 0 : 1))
        {
            var bytes = new byte[(int)Math.Min(mapping.Size, 1 << 20)];
            var read = memory.TryRead(mapping.Start, bytes);
            var at = bytes.AsSpan(0, read).IndexOf([(byte)0x0f, (byte)0x05]);
            if (at >= 0) return mapping.Start + (ulong)at;
        }
        throw new UserPatchException("the process has no syscall instruction Kintsugi could use", ExitCode.Environment);
    }

    private static void CheckPatchable(int pid)
    {
        string status;
        try { status = File.ReadAllText($"/proc/{pid}/status"); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new UserPatchException($"process {pid} does not exist", ExitCode.NotFound, e);
        }
        string Field(string name) =>
            status.Split('\n').FirstOrDefault(l => l.StartsWith(name + ":"))?[(name.Length + 1)..].Trim() ?? "";
        var state = Field("State");
        if (state.StartsWith('T') || state.StartsWith('t'))
            throw new UserPatchException($"process {pid} is stopped ({state}); continue it first",
                ExitCode.Environment);
        if (state.StartsWith('Z') || state.StartsWith('X'))
            throw new UserPatchException($"process {pid} has exited", ExitCode.NotFound);
        if (Field("TracerPid") is var tracer && tracer != "0" && tracer != "")
            throw new UserPatchException($"process {pid} is traced by process {tracer} (a debugger?); detach it first",
                ExitCode.Environment);
        if (Field("Seccomp") == "2")
            throw new UserPatchException($"process {pid} runs under a seccomp filter, which may kill it for the mmap " +
                $"Kintsugi runs in it; not patched",
                ExitCode.Environment);
    }

    /// <summary>Whether a failure only says that the process is gone (it exited, or is a zombie).</summary>
    private static bool Exited(int pid, UserPatchException failure)
    {
        if (failure.ExitCode == ExitCode.NotFound) return true;
        try { return File.ReadAllText($"/proc/{pid}/stat").Split(") ")[1][0] is 'Z' or 'X'; }
        catch (IOException) { return true; }
        catch (UnauthorizedAccessException) { return false; }
    }

    private static string CommandOf(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (IOException) { return "?"; }
        catch (UnauthorizedAccessException) { return "?"; }
    }
}
