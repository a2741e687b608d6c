/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kintsugi's stand-in for kpatch's kpatch-syscall.h. kpatch needs its own syscall definition macros to keep
 * the syscall metadata out of the patch; Kintsugi's differ already leaves unchanged metadata behind, so a
 * patched system call is defined exactly as the kernel defines it.
 */
#ifndef KINTSUGI_KPATCH_SYSCALL_H
#define KINTSUGI_KPATCH_SYSCALL_H

#include <linux/syscalls.h>

#define KPATCH_SYSCALL_DEFINE0 SYSCALL_DEFINE0
#define KPATCH_SYSCALL_DEFINE1 SYSCALL_DEFINE1
#define KPATCH_SYSCALL_DEFINE2 SYSCALL_DEFINE2
#define KPATCH_SYSCALL_DEFINE3 SYSCALL_DEFINE3
#define KPATCH_SYSCALL_DEFINE4 SYSCALL_DEFINE4
#define KPATCH_SYSCALL_DEFINE5 SYSCALL_DEFINE5
#define KPATCH_SYSCALL_DEFINE6 SYSCALL_DEFINE6

#endif
