/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kintsugi's kpatch-syscall.h: system call definitions a livepatch can replace.
 *
 * On x86-64, SYSCALL_DEFINEn(name, ...) puts the body into "static inline long __do_sys_name()", called
 * through __se_sys_name() from the entry stubs __x64_sys_name() and __ia32_sys_name(). The kernel's
 * "inline" implies notrace, so when gcc keeps __do_sys_name out of line it has no ftrace entry and
 * livepatch cannot redirect it. These macros define the same stubs with the body under another name,
 * __kintsugi_do_sys_name: in the patched unit the body is a new function (it needs no ftrace entry), and
 * what changes are the stubs, which are global, traced, and what the system call table calls.
 * SYSCALL_DEFINE0's body is an ordinary static function with an ftrace entry, so it is kept as it is.
 */
#ifndef KINTSUGI_KPATCH_SYSCALL_H
#define KINTSUGI_KPATCH_SYSCALL_H

#include <linux/syscalls.h>

#if !defined(CONFIG_X86_64) || !defined(CONFIG_ARCH_HAS_SYSCALL_WRAPPER)
#error "kpatch-syscall.h: Kintsugi builds system call patches for x86-64 kernels with syscall wrappers only"
#endif

#define KPATCH_SYSCALL_DEFINE0 SYSCALL_DEFINE0
#define KPATCH_SYSCALL_DEFINE1(name, ...) KINTSUGI_SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) KINTSUGI_SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) KINTSUGI_SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) KINTSUGI_SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) KINTSUGI_SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) KINTSUGI_SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

/* The metadata stays the kernel's own (the differ keeps unchanged data out of the patch). */
#define KINTSUGI_SYSCALL_DEFINEx(x, sname, ...)					\
	SYSCALL_METADATA(sname, x, __VA_ARGS__)					\
	__KINTSUGI_SYSCALL_DEFINEx(x, sname, __VA_ARGS__)

/* arch/x86/include/asm/syscall_wrapper.h's __SYSCALL_DEFINEx (6.1 and 6.12), the body renamed. */
#define __KINTSUGI_SYSCALL_DEFINEx(x, name, ...)				\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__));		\
	static inline long __kintsugi_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__));\
	__X64_SYS_STUBx(x, name, __VA_ARGS__)					\
	__IA32_SYS_STUBx(x, name, __VA_ARGS__)					\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__))		\
	{									\
		long ret = __kintsugi_do_sys##name(__MAP(x,__SC_CAST,__VA_ARGS__));\
		__MAP(x,__SC_TEST,__VA_ARGS__);					\
		__PROTECT(x, ret,__MAP(x,__SC_ARGS,__VA_ARGS__));		\
		return ret;							\
	}									\
	static inline long __kintsugi_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__))

#endif
