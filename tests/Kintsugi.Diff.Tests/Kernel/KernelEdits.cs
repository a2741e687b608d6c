namespace Kintsugi.Diff.Tests.Kernel;

/// <summary>
/// Small edits of real units of the 6.1 tree, each chosen for the kernel special sections its changed
/// function has (and its unit's other functions have too, so that dropping them is visible). They are test
/// inputs: what matters is that the machine code changes, not that the change would make a sensible fix.
/// </summary>
public static class KernelEdits
{
    /// <summary>
    /// psi_memstall_enter tests the static key psi_disabled, as do five other functions of psi.c (compiled into
    /// build_utility.o).
    /// </summary>
    public static readonly KernelEdit StaticBranch = new("psi-memstall-enter", "kernel/sched/psi.c",
        "\tpsi_task_change(current, 0, TSK_MEMSTALL | TSK_MEMSTALL_RUNNING);\n\n\trq_unlock_irq(rq, " +
        "&rf);\n}\nEXPORT_SYMBOL_GPL(psi_memstall_enter);",
        "\tpsi_task_change(current, 0, TSK_MEMSTALL | TSK_MEMSTALL_RUNNING | TSK_IOWAIT);\n\n\trq_unlock_irq(rq, " +
        "&rf);\n}\nEXPORT_SYMBOL_GPL(psi_memstall_enter);",
        Unit: "kernel/sched/build_utility.o");

    /// <summary>
    /// __kthread_bind_mask (inlined into its callers) warns when the task is not inactive; kthread.c has a dozen other
    /// warnings.
    /// </summary>
    public static readonly KernelEdit Warning = new("kthread-bind-mask", "kernel/kthread.c",
        "\tdo_set_cpus_allowed(p, mask);\n\tp->flags |= PF_NO_SETAFFINITY;\n",
        "\tdo_set_cpus_allowed(p, mask);\n\tp->flags |= PF_NO_SETAFFINITY | PF_NOFREEZE;\n");

    /// <summary>
    /// copy_fpstate_to_sigframe writes the FPU state to the user's signal frame under exception entries, as
    /// __fpu_restore_sig reads it back.
    /// </summary>
    public static readonly KernelEdit UserAccess = new("copy-fpstate-to-sigframe", "arch/x86/kernel/fpu/signal.c",
        "\tif (!access_ok(buf, size))\n\t\treturn false;\n\n\tif (use_xsave()) {\n\t\tstruct xregs_state __user " +
        "*xbuf = buf_fx;",
        "\tif (!access_ok(buf, size) || size < 0)\n\t\treturn false;\n\n\tif (use_xsave()) {\n\t\tstruct xregs_state " +
        "__user *xbuf = buf_fx;");

    /// <summary>save_fpregs_to_fpstate picks XSAVE variants and tests CPU features through alternatives.</summary>
    public static readonly KernelEdit Alternatives = new("save-fpregs-to-fpstate", "arch/x86/kernel/fpu/core.c",
        "\t\tos_xsave(fpu->fpstate);\n\t\tupdate_avx_timestamp(fpu);\n\t\treturn;",
        "\t\tos_xsave(fpu->fpstate);\n\t\treturn;");

    /// <summary>
    /// shrink_dcache_parent calls cond_resched(), a static call under PREEMPT_DYNAMIC, as other functions of dcache.c
    /// do.
    /// </summary>
    public static readonly KernelEdit StaticCall = new("shrink-dcache-parent", "fs/dcache.c",
        "\t\tcond_resched();\n\t\tif (!data.found)\n\t\t\tbreak;",
        "\t\tcond_resched();\n\t\tif (data.found <= 0)\n\t\t\tbreak;");

    /// <summary>vfs_read calls through f_op (a retpoline) and returns through the return thunk.</summary>
    public static readonly KernelEdit IndirectCall = new("vfs-read", "fs/read_write.c",
        "\t\tret = -EINVAL;\n\tif (ret > 0) {\n\t\tfsnotify_access(file);",
        "\t\tret = -ENOSYS;\n\tif (ret > 0) {\n\t\tfsnotify_access(file);");

    /// <summary>
    /// kstrdup, a small traced function of a unit of many (kmemdup beside it has no ftrace entry in this build).
    /// </summary>
    public static readonly KernelEdit TracedFunction = new("kstrdup", "mm/util.c",
        "\tbuf = kmalloc_track_caller(len, gfp);\n\tif (buf)\n\t\tmemcpy(buf, s, len);\n\treturn " +
        "buf;\n}\nEXPORT_SYMBOL(kstrdup);",
        "\tbuf = kmalloc_track_caller(len, gfp | __GFP_NOWARN);\n\tif (buf)\n\t\tmemcpy(buf, s, len);\n\treturn " +
        "buf;\n}\nEXPORT_SYMBOL(kstrdup);");

    /// <summary>tcp_sock_set_keepcnt takes the socket lock: a frame with ORC entries, in a unit of hundreds.</summary>
    public static readonly KernelEdit Unwinding = new("tcp-sock-set-keepcnt", "net/ipv4/tcp.c",
        "\tif (val < 1 || val > MAX_TCP_KEEPCNT)\n\t\treturn -EINVAL;\n\n\tlock_sock(sk);\n\t/* Paired with " +
        "READ_ONCE() in keepalive_probes() */\n\tWRITE_ONCE(tcp_sk(sk)->keepalive_probes, val);",
        "\tif (val < 2 || val > MAX_TCP_KEEPCNT)\n\t\treturn -EINVAL;\n\n\tlock_sock(sk);\n\t/* Paired with " +
        "READ_ONCE() in keepalive_probes() */\n\tWRITE_ONCE(tcp_sk(sk)->keepalive_probes, val);");

    /// <summary>
    /// kvm_apic_accept_pic_intr (module kvm) tests apic_hw_disabled, a static key defined in the module's lapic.c.
    /// </summary>
    public static readonly KernelEdit ModuleStaticBranch = new("kvm-apic-accept-pic-intr", "arch/x86/kvm/lapic.c",
        "\tif (!kvm_apic_hw_enabled(vcpu->arch.apic))\n\t\treturn 1;\n\tif ((lvt0 & APIC_LVT_MASKED) == 0 &&",
        "\tif (!kvm_apic_hw_enabled(vcpu->arch.apic))\n\t\treturn 2;\n\tif ((lvt0 & APIC_LVT_MASKED) == 0 &&");

    /// <summary>
    /// kvm_pmu_rdpmc (module kvm) calls kvm_x86_pmu_rdpmc_ecx_to_pmc, defined in pmu.c, and kvm_x86_get_cpl, defined in
    /// x86.c of the same module.
    /// </summary>
    public static readonly KernelEdit ModuleStaticCall = new("kvm-pmu-rdpmc", "arch/x86/kvm/pmu.c",
        "\tpmc = static_call(kvm_x86_pmu_rdpmc_ecx_to_pmc)(vcpu, idx, &mask);\n\tif (!pmc)\n\t\treturn 1;",
        "\tpmc = static_call(kvm_x86_pmu_rdpmc_ecx_to_pmc)(vcpu, idx, &mask);\n\tif (!pmc)\n\t\treturn 2;");

    /// <summary>
    /// free_unused_bufs (module virtio_net) calls cond_resched(), a static call of vmlinux under PREEMPT_DYNAMIC whose
    /// trampoline alone is exported (EXPORT_STATIC_CALL_TRAMP): objtool names the trampoline as the sites' key.
    /// </summary>
    public static readonly KernelEdit ModuleCallsVmlinuxStaticCall = new("virtio-net-free-unused-bufs",
        "drivers/net/virtio_net.c",
        "\t\tstruct virtqueue *vq = vi->rq[i].vq;\n\t\twhile ((buf = virtqueue_detach_unused_buf(vq)) != NULL)\n" +
        "\t\t\tvirtnet_rq_free_unused_buf(vq, buf);\n\t\tcond_resched();",
        "\t\tstruct virtqueue *vq = vi->rq[i].vq;\n\t\twhile ((buf = virtqueue_detach_unused_buf(vq)) != NULL) {\n" +
        "\t\t\tvirtnet_rq_free_unused_buf(vq, buf);\n\t\t\tcond_resched();\n\t\t}\n\t\tcond_resched();");

    /// <summary>has_capability gains an entry in a table section the engine has never heard of.</summary>
    public static readonly KernelEdit UnknownTable = new("has-capability", "kernel/capability.c",
        "bool has_capability(struct task_struct *t, int cap)\n{\n",
        "bool has_capability(struct task_struct *t, int cap)\n{\n\tasm volatile(\"1:\\tnop\\n\\t.pushsection " +
        ".kintsugi_probe_sites, \\\"a\\\"\\n\\t.long 1b - .\\n\\t.popsection\");\n");

    /// <summary>
    /// find_vpid gains a reference to unnamed writable data in a section the engine does not know (not in lib/, which
    /// is built without ftrace).
    /// </summary>
    public static readonly KernelEdit UnknownData = new("find-vpid", "kernel/pid.c",
        "struct pid *find_vpid(int nr)\n{\n",
        "struct pid *find_vpid(int nr)\n{\n\tasm volatile(\"leaq 2f(%%rip), %%rax\\n\\t.pushsection .kintsugi_state, " +
        "\\\"aw\\\"\\n2:\\t.quad 0\\n\\t.popsection\" ::: \"rax\");\n");

    /// <summary>
    /// A comment line above percpu_ref_switch_to_atomic_rcu moves every later warning of the unit, and its one
    /// pr_debug (whose dynamic debug descriptor records the line), down one line, and nothing else.
    /// </summary>
    public static readonly KernelEdit WarningLinesOnly = new("percpu-refcount-lines", "lib/percpu-refcount.c",
        "\nstatic void percpu_ref_switch_to_atomic_rcu(struct rcu_head *rcu)\n",
        "\n/* Runs once every CPU has stopped using the percpu counters. */\nstatic void " +
        "percpu_ref_switch_to_atomic_rcu(struct rcu_head *rcu)\n");

    public static IReadOnlyList<KernelEdit> All =>
        [StaticBranch, Warning, UserAccess, Alternatives, StaticCall, IndirectCall, TracedFunction, Unwinding,
            ModuleStaticBranch,
         ModuleStaticCall, ModuleCallsVmlinuxStaticCall, UnknownTable, UnknownData, WarningLinesOnly];
}
