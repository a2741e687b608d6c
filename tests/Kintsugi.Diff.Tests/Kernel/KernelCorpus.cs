using System.Security.Cryptography;
using System.Text;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build;
using Kintsugi.Kernel.Build.Symbols;
using Kintsugi.Kernel.Build.Units;
using Kintsugi.Testing;

namespace Kintsugi.Diff.Tests.Kernel;

/// <summary>
/// Units of the 6.1 cloud kernel compiled from its prepared source tree with the distribution's flags plus
/// the differ's (<see cref="DiffFlags"/>), as the builder compiles them. They are compiled once per machine,
/// in one make invocation, and kept under <c>$KINTSUGI_CACHE/diff-corpus/RELEASE/KEY</c>, where the key
/// covers the kernel's build-id, the flags and the list, so changing any of them recompiles. The objects are
/// compiled beside that directory and moved in whole, so an interrupted run never leaves a partial corpus.
/// </summary>
public sealed class KernelCorpus
{
    public const string DiffFlags = "-ffunction-sections -fdata-sections";

    public static KernelRelease Release => TestKernels.Debian12Cloud61;

    /// <summary>
    /// A spread over the tree: the scheduler, memory management, file systems, networking, drivers, x86
    /// code, libraries and security modules, including large units and units with every kernel special
    /// section the differ handles. Modules (=m) are included on purpose: their keys are refused.
    /// </summary>
    public static readonly IReadOnlyList<string> Objects =
    [
        // kernel/
        "kernel/sched/core.o", "kernel/sched/build_utility.o", "kernel/sched/fair.o", "kernel/fork.o", "kernel/exit.o",
            "kernel/signal.o",
        "kernel/sys.o", "kernel/panic.o", "kernel/cpu.o", "kernel/capability.o",
        "kernel/ptrace.o", "kernel/workqueue.o", "kernel/pid.o", "kernel/kthread.o",
        "kernel/time/timer.o", "kernel/time/hrtimer.o", "kernel/irq/manage.o", "kernel/locking/mutex.o",
            "kernel/locking/rwsem.o",
        "kernel/printk/printk.o", "kernel/futex/core.o", "kernel/cgroup/cgroup.o", "kernel/jump_label.o",
            "kernel/static_call_inline.o",
        "kernel/module/main.o", "kernel/seccomp.o", "kernel/livepatch/core.o",
        "kernel/bpf/syscall.o", "kernel/events/core.o",
        // mm/
        "mm/page_alloc.o", "mm/truncate.o", "mm/swap.o", "mm/percpu.o", "mm/slub.o", "mm/filemap.o", "mm/vmscan.o",
            "mm/gup.o",
        "mm/util.o", "mm/swapfile.o", "mm/shmem.o", "mm/madvise.o",
        "mm/oom_kill.o", "mm/readahead.o", "mm/memcontrol.o", "mm/huge_memory.o",
        // fs/
        "fs/namei.o", "fs/open.o", "fs/read_write.o", "fs/exec.o", "fs/file.o", "fs/dcache.o", "fs/inode.o",
        "fs/select.o", "fs/pipe.o", "fs/namespace.o", "fs/proc/base.o", "fs/proc/cmdline.o",
        "fs/eventpoll.o", "fs/locks.o", "fs/seq_file.o",
        "fs/ext4/inode.o", "fs/ext4/super.o", "fs/ext4/namei.o", "fs/ext4/extents.o",
        // net/
        "net/core/dev.o", "net/core/skbuff.o", "net/core/sock.o", "net/ipv4/tcp.o", "net/ipv4/tcp_input.o",
            "net/ipv4/tcp_ipv4.o",
        "net/ipv4/udp.o", "net/ipv4/af_inet.o", "net/socket.o", "net/unix/af_unix.o",
        "net/netlink/af_netlink.o", "net/packet/af_packet.o", "net/netfilter/core.o",
        // drivers/
        "drivers/char/random.o", "drivers/char/mem.o", "drivers/tty/tty_io.o", "drivers/base/core.o",
        "drivers/virtio/virtio_ring.o", "drivers/net/virtio_net.o", "drivers/block/virtio_blk.o", "drivers/pci/pci.o",
        "drivers/net/tun.o",
        // arch/x86/
        "arch/x86/kernel/process.o", "arch/x86/kernel/signal.o", "arch/x86/kernel/traps.o",
        "arch/x86/kernel/alternative.o", "arch/x86/kernel/cpu/common.o", "arch/x86/kernel/cpu/bugs.o",
            "arch/x86/kernel/fpu/core.o",
        "arch/x86/kernel/fpu/signal.o", "arch/x86/kernel/kvm.o", "arch/x86/mm/fault.o", "arch/x86/mm/tlb.o",
        "arch/x86/kvm/lapic.o", "arch/x86/kvm/pmu.o", "arch/x86/events/core.o",
        // lib/
        "lib/string.o", "lib/vsprintf.o", "lib/iov_iter.o", "lib/bitmap.o", "lib/scatterlist.o",
        "lib/lockref.o", "lib/strncpy_from_user.o", "lib/strnlen_user.o", "lib/xarray.o", "lib/percpu-refcount.o",
        "lib/kstrtox.o", "lib/bug.o", "lib/usercopy.o",
        // security/
        "security/commoncap.o", "security/security.o", "security/apparmor/lsm.o", "security/selinux/hooks.o",
        "security/keys/key.o", "security/yama/yama_lsm.o",
    ];

    private static readonly Lazy<Task<KernelCorpus>> Instance = new(CreateAsync);

    public KernelSourceTree Tree { get; }
    public KbuildUnits Units { get; }
    /// <summary>Who exports what: the kernel's Module.symvers, as the builder reads it.</summary>
    public KernelExports Exports { get; }
    /// <summary>The compiled objects, each at its path in the tree.</summary>
    public string Directory { get; }

    private KernelCorpus(KernelSourceTree tree, string directory, KernelExports exports)
    {
        Tree = tree;
        Exports = exports;
        Units = KbuildUnits.Open(tree.Directory);
        Directory = directory;
    }

    public static Task<KernelCorpus> GetAsync() => Instance.Value;

    public string PathOf(string objectPath) => Path.Combine(Directory, objectPath);

    /// <summary>The kernel object (vmlinux or a module) a unit of the corpus is linked into.</summary>
    public PatchedObjectName PatchedObjectOf(string objectPath) =>
        PatchedObjectName.Parse((Units.Locate(objectPath[..^2] + ".c")
            ?? throw new InvalidOperationException($"{objectPath} is not built by this kernel's configuration"))
            .PatchedObject);

    /// <summary>The directory of the diff-corpus cache for this kernel.</summary>
    public static string CacheRoot => Path.Combine(DebianKernelArchive.DefaultCacheRoot, "diff-corpus", Release.Value);

    private static async Task<KernelCorpus> CreateAsync()
    {
        var tree = await PreparedTreeAsync();
        var units = KbuildUnits.Open(tree.Directory);
        var unbuilt = Objects.Where(o => units.Locate(o[..^2] + ".c") is null).ToList();
        if (unbuilt.Count > 0)
            throw new InvalidOperationException($"the configuration of {Release} builds none of: " +
                $"{string.Join(", ", unbuilt)}");
        var directory = await CompiledOnceAsync(tree, "corpus", Objects, patches: []);
        var kernel = await new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot)
            .FetchAsync(Release, KernelParts.Headers | KernelParts.Source);
        var exports = ModuleSymvers.Load(Path.Combine(kernel.HeadersDirectory, "Module.symvers")).Exports;
        return new KernelCorpus(tree, directory, exports);
    }

    public static async Task<KernelSourceTree> PreparedTreeAsync()
    {
        var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot);
        var kernel = await archive.FetchAsync(Release, KernelParts.Headers | KernelParts.Source);
        return await KernelSourceTree.PrepareAsync(kernel);
    }

    /// <summary>
    /// <paramref name="objects"/> compiled with <see cref="DiffFlags"/> after applying <paramref name="patches"/>, once
    /// per machine: the directory is keyed by the kernel, flags, list and patches, compiled beside its final name under
    /// a lock and renamed into place.
    /// </summary>
    public static async Task<string> CompiledOnceAsync(KernelSourceTree tree, string kind,
        IReadOnlyList<string> objects, IReadOnlyList<SourcePatch> patches)
    {
        var identity = string.Join("\n",
            [tree.Target.BuildId.ToString(), DiffFlags, .. objects, .. patches.Select(p => p.Sha256)]);
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(identity)))[..16];
        var directory = Path.Combine(CacheRoot, $"{kind}-{key}");
        if (System.IO.Directory.Exists(directory)) return directory;
        System.IO.Directory.CreateDirectory(CacheRoot);
        using var cacheLock = await CacheLock.AcquireAsync(directory + ".lock", CancellationToken.None);
        if (System.IO.Directory.Exists(directory)) return directory;
        // Under the lock nobody else compiles this key: any staging directory left is from a run that died midway.
        foreach (var stale in System.IO.Directory.GetDirectories(CacheRoot, Path.GetFileName(directory) + ".staging-*"))
            System.IO.Directory.Delete(stale, recursive: true);
        var staging = directory + ".staging-" + Environment.ProcessId;
        await using (var workspace = await BuildWorkspace.OpenAsync(tree))
        {
            foreach (var patch in patches) await workspace.ApplyAsync(patch);
            await workspace.CompileAllAsync(objects, staging, DiffFlags);
        }
        System.IO.Directory.Move(staging, directory);
        return directory;
    }
}
