/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kintsugi's stand-in for kpatch's kpatch-macros.h, so that patches written for kpatch build unchanged.
 * The builder puts this directory on the include path of every patched unit.
 *
 * Each callback macro defines a global wrapper named __kintsugi_callback_<kind>_<function>. The differ
 * keeps it (nothing references it) and the builder registers it as that kind of callback on the livepatch
 * object (vmlinux or the module) that the unit belongs to.
 */
#ifndef KINTSUGI_KPATCH_MACROS_H
#define KINTSUGI_KPATCH_MACROS_H

#include <linux/compiler.h>
#include <linux/livepatch.h>

typedef struct klp_object patch_object;

#define KINTSUGI_INT_CALLBACK(kind, fn)                                             \
	int __kintsugi_callback_##kind##_##fn(patch_object *obj);                    \
	noinline int __kintsugi_callback_##kind##_##fn(patch_object *obj)            \
	{                                                                            \
		int (*checked)(patch_object *) = fn;                                 \
		return checked(obj);                                                 \
	}

#define KINTSUGI_VOID_CALLBACK(kind, fn)                                            \
	void __kintsugi_callback_##kind##_##fn(patch_object *obj);                   \
	noinline void __kintsugi_callback_##kind##_##fn(patch_object *obj)           \
	{                                                                            \
		void (*checked)(patch_object *) = fn;                                \
		checked(obj);                                                        \
	}

/* Called before patching; a non-zero return refuses the patch for this object. */
#define KPATCH_PRE_PATCH_CALLBACK(fn)    KINTSUGI_INT_CALLBACK(pre_patch, fn)
#define KPATCH_POST_PATCH_CALLBACK(fn)   KINTSUGI_VOID_CALLBACK(post_patch, fn)
#define KPATCH_PRE_UNPATCH_CALLBACK(fn)  KINTSUGI_VOID_CALLBACK(pre_unpatch, fn)
#define KPATCH_POST_UNPATCH_CALLBACK(fn) KINTSUGI_VOID_CALLBACK(post_unpatch, fn)

#define KPATCH_PRINTK(fmt, ...) printk(fmt, ##__VA_ARGS__)

/*
 * kpatch's differ directives. Kintsugi decides what to include from the code itself; building a patch that
 * relies on these would silently mean something else, so they stop the build with the reason.
 */
#define KPATCH_IGNORE_SECTION(name) \
	_Static_assert(0, "Kintsugi does not support KPATCH_IGNORE_SECTION: remove it; the differ includes only what changed")
#define KPATCH_IGNORE_FUNCTION(fn) \
	_Static_assert(0, "Kintsugi does not support KPATCH_IGNORE_FUNCTION: move the change out of " #fn " or accept that it is patched")
#define KPATCH_FORCE_UNSAFE(fn) \
	_Static_assert(0, "Kintsugi does not support KPATCH_FORCE_UNSAFE: patch the callers of " #fn " instead")

#endif
