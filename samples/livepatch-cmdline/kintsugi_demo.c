/*
 * The demo livepatch: replaces cmdline_proc_show (fs/proc/cmdline.c) so that /proc/cmdline tells the
 * reader that the running kernel was patched without a reboot. Built by `kintsugi demo` with kbuild
 * against the exact kernel's headers.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

static int demo_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "this kernel was live patched by Kintsugi, without a reboot\n");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = demo_cmdline_proc_show, },
	{ }
};

static struct klp_object objs[] = {
	{ .funcs = funcs, },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
	.replace = true,
};

static int demo_init(void)
{
	return klp_enable_patch(&patch);
}

static void demo_exit(void)
{
}

module_init(demo_init);
module_exit(demo_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
MODULE_DESCRIPTION("Kintsugi demo: a visible change to /proc/cmdline");
