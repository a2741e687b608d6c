using Kintsugi.Kernel;

namespace Kintsugi.Kernel.Tests;

/// <summary>
/// Which kernel-log lines make the health check fail after a patch load: the kernel's own reports, never lines
/// about user processes, whatever they are named (lines as Debian 12's 6.1 and 6.12 kernels print them, as the
/// syslog buffer gives them with their level, and as a serial console shows them).
/// </summary>
public sealed class KernelHealthSpecification
{
    [Theory]
    [InlineData("<4>[   25.123456] ------------[ cut here ]------------")]
    [InlineData("<4>[   25.123460] WARNING: CPU: 0 PID: 140 at kernel/sched/core.c:1234 cmdline_proc_show+0x12/0x30 " +
        "[livepatch_sample]")]
    [InlineData("<1>[   30.512000] BUG: kernel NULL pointer dereference, address: 0000000000000000")]
    [InlineData("<4>[   30.512100] Oops: 0000 [#1] PREEMPT SMP NOPTI")]
    [InlineData("<4>[   12.300000] general protection fault, probably for non-canonical address 0xdead000000000100: " +
        "0000 [#1] PREEMPT SMP NOPTI")]
    [InlineData("<4>[   12.300000] Oops: general protection fault, probably for non-canonical address " +
        "0xdead000000000100: 0000 [#1] PREEMPT SMP NOPTI")]
    [InlineData("<0>[   50.100000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:35]")]
    [InlineData("<3>[  245.100000] INFO: task kworker/0:2:57 blocked for more than 120 seconds.")]
    [InlineData("<4>[   10.000000] kernel BUG at mm/slub.c:434!")]
    [InlineData("<0>[   10.100000] Kernel panic - not syncing: Fatal exception")]
    [InlineData("[   25.123460] WARNING: CPU: 1 PID: 1 at kernel/livepatch/core.c:880 klp_init_object+0x30/0x40")]
    [InlineData("<3>[    5.000000] livepatch: failed to register patch 'kintsugi_fixture_cmdline_b'")]
    public void A_report_the_kernel_makes_about_itself_is_a_problem(string line) =>
        Assert.True(KernelLog.IsProblem(line), line);

    [Theory]
    // A static program named "WARNING:" dereferencing NULL (seen in the lab on 6.1.0-56).
    [InlineData("<6>[   41.178332] WARNING:[140]: segfault at 0 ip 0000000000401745 sp 00007ffc3c7a04f0 error 6 in " +
        "WARNING:[401000+96000] likely on CPU 1 (core 1, socket 0)")]
    [InlineData("<6>[   41.178400] Code: 48 8b 04 25 00 00 00 00 <c7> 04 25 00 00 00 00 2a 00 00 00 31 c0 c3")]
    // A user-space general protection fault and trap, and processes named like kernel reports.
    [InlineData("<6>[   52.000000] traps: prog[201] general protection fault ip:401745 sp:7ffd2c1e5a40 error:0 in " +
        "prog[401000+96000]")]
    [InlineData("<6>[   52.000000] traps: WARNING:[143] trap divide error ip:401745 sp:7ffd2c1e5a40 error:0 in " +
        "WARNING:[401000+96000]")]
    [InlineData("<6>[   53.000000] BUG: oops[141]: segfault at 0 ip 0000000000401745 sp 00007ffc3c7a04f0 error 6 in " +
        "BUG: oops[401000+96000]")]
    [InlineData(
        "<6>[   53.100000] Oops: 0000 [#1][142]: segfault at 0 ip 0000000000401745 sp 00007ffc3c7a04f0 error 6")]
    [InlineData(
        "<6>[   53.200000] WARNING: CPU: 0[144]: segfault at 0 ip 0000000000401745 sp 00007ffc3c7a04f0 error 6")]
    [InlineData("<6>[   53.300000] general protec[145]: segfault at 0 ip 0000000000401745 sp 00007ffc3c7a04f0 error 6")]
    [InlineData("<6>[   53.400000] BUG: x (146): drop_caches: 3")]
    // What a livepatch load itself prints.
    [InlineData("<5>[    1.000000] livepatch: enabling patch 'livepatch_sample'")]
    [InlineData("<6>[    2.000000] livepatch: 'livepatch_sample': starting patching transition")]
    [InlineData("<4>[    3.000000] livepatch_sample: loading out-of-tree module taints kernel.")]
    [InlineData("<4>[    3.100000] livepatch_sample: tainting kernel with TAINT_LIVEPATCH")]
    public void A_line_about_a_user_process_or_a_normal_load_is_not_a_problem(string line) =>
        Assert.False(KernelLog.IsProblem(line), line);

    [Theory]
    [InlineData("<4>[   25.123460] WARNING: CPU: 0 PID: 1 at x", "WARNING: CPU: 0 PID: 1 at x")]
    [InlineData("[    0.000000] Linux version 6.1.0-56-cloud-amd64", "Linux version 6.1.0-56-cloud-amd64")]
    [InlineData("<6>[   12.000000] [    T1] BUG: y", "BUG: y")]
    [InlineData("plain text", "plain text")]
    public void The_message_is_read_after_the_level_the_time_and_the_caller(string line, string message) =>
        Assert.Equal(message, KernelLog.Message(line));
}
