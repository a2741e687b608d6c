using Kintsugi;
using Kintsugi.Testing;

namespace Kintsugi.Diff.Tests.Robustness;

/// <summary>
/// Small kernel-style translation units compiled by gcc-12 with the kernel's code-generation flags, each with a
/// one-function fix: the well-formed pairs every malformed input is derived from. Between them they carry statics,
/// numbered static locals, constprop clones, a .cold part, string literals, a switch table, __func__, __init code,
/// __bug_table, __ex_table, __jump_table and __mcount_loc entries, and their relocations.
/// </summary>
internal static class KernelStyleUnits
{
    public sealed record Unit(string Name, byte[] Original, byte[] Patched);

    /// <summary>
    /// The flags kbuild uses for x86-64 vmlinux code that matter to the object's shape, plus the per-symbol sections
    /// the differ needs.
    /// </summary>
    public static readonly string[] Flags =
    [
        "-O2", "-mcmodel=kernel", "-fno-PIE", "-fno-pic", "-mno-red-zone", "-fno-common", "-nostdinc",
        "-ffunction-sections", "-fdata-sections", "-pg", "-mfentry", "-mrecord-mcount",
            "-fno-asynchronous-unwind-tables",
    ];

    private static readonly Lazy<IReadOnlyList<Unit>> Compiled = new(Compile);

    public static IReadOnlyList<Unit> All => Compiled.Value;

    private static IReadOnlyList<Unit> Compile()
    {
        using var directory = new TemporaryDirectory();
        return Sources.Select(source => new Unit(source.Name,
            CompileOne(directory, "original", source.Name + ".c", source.Code),
            CompileOne(directory, "fixed", source.Name + ".c",
                source.Code.Replace(source.Before, source.After, StringComparison.Ordinal)))).ToList();
    }

    /// <summary>
    /// Both versions compile under the same relative file name, as kbuild's do, so that __FILE__ is the same.
    /// </summary>
    private static byte[] CompileOne(TemporaryDirectory directory, string version, string file, string code)
    {
        var where = Directory.CreateDirectory(directory.File(version)).FullName;
        File.WriteAllText(Path.Combine(where, file), code);
        var output = Path.ChangeExtension(file, ".o");
        var result = ExternalCommand.RunAsync("gcc-12", [.. Flags, "-c", file, "-o", output], where).GetAwaiter()
            .GetResult();
        if (!result.Succeeded)
            throw new InvalidOperationException($"gcc-12 failed on {version}/{file}:\n{result.StandardError}");
        return File.ReadAllBytes(Path.Combine(where, output));
    }

    /// <param name="Before">Text of the original that the fix replaces (it must change exactly one function).</param>
    private sealed record Source(string Name, string Code, string Before, string After);

    private static readonly Source[] Sources =
    [
        new("items", """
            extern int _printk(const char *fmt, ...);
            extern void *kmalloc(unsigned long size, unsigned flags);
            extern void kfree(const void *p);
            extern int shared_counter;
            extern void __might_sleep(const char *file, int line);

            #define BUG_ON(c) do { if (__builtin_expect(!!(c), 0)) asm volatile( \
                "1: ud2\n" \
                ".pushsection __bug_table,\"aw\"\n" \
                "2: .long 1b - .\n" \
                ".long %c0 - .\n" \
                ".word %c1\n" \
                ".word 0\n" \
                ".org 2b + 12\n" \
                ".popsection" :: "i"(__FILE__), "i"(__LINE__)); } while (0)

            struct item { int id; long weight; const char *label; struct item *next; };

            static struct item *items;
            static int item_count;
            int global_limit = 64;
            static const char *const kinds[] = { "small", "medium", "large", "huge" };

            static __attribute__((noinline)) long scale(long value, int factor)
            {
                return value * factor + (factor > 3 ? 7 : 1);
            }

            static int classify(long weight)
            {
                switch (weight >> 4) {
                case 0: return 0;
                case 1: return 1;
                case 2: return 1;
                case 3: return 2;
                case 4: return 2;
                case 5: return 3;
                case 6: return 3;
                default: return 3;
                }
            }

            int add_item(int id, long weight)
            {
                static int calls;
                struct item *item;
                __might_sleep(__FILE__, __LINE__);
                if (item_count >= global_limit)
                    return -12;
                item = kmalloc(sizeof(*item), 0xcc0);
                if (!item)
                    return -12;
                calls++;
                item->id = id;
                item->weight = scale(weight, 3);
                item->label = kinds[classify(item->weight)];
                item->next = items;
                items = item;
                item_count++;
                _printk("add_item %d %s (%d calls)\n", id, item->label, calls);
                return 0;
            }

            int remove_item(int id)
            {
                struct item **link;
                for (link = &items; *link; link = &(*link)->next) {
                    if ((*link)->id == id) {
                        struct item *gone = *link;
                        *link = gone->next;
                        BUG_ON(item_count == 0);
                        item_count--;
                        kfree(gone);
                        return 0;
                    }
                }
                return -2;
            }

            static __attribute__((noinline)) long total_weight(int factor)
            {
                long total = 0;
                for (struct item *item = items; item; item = item->next)
                    total += scale(item->weight, factor);
                return total;
            }

            long report(void)
            {
                static int reports;
                long heavy = total_weight(2);
                reports++;
                if (__builtin_expect(heavy > 1000000, 0)) {
                    _printk("%s: heavy load %ld after %d reports\n", __func__, heavy, reports);
                    shared_counter++;
                }
                return heavy + total_weight(5);
            }

            __attribute__((section(".init.text"))) int setup_items(void)
            {
                return add_item(0, 1);
            }
            """,
            "    return -2;\n}", "    return -22;\n}"),
        new("cache", """
            extern int _printk(const char *fmt, ...);
            extern void __attribute__((cold, noreturn)) panic_like(const char *why, int code);
            extern void __attribute__((cold)) __warn_printk(const char *fmt, ...);
            extern unsigned long jiffies_like;

            struct stats { unsigned long hits, misses, evictions; unsigned int shift; };
            static struct stats cache_stats = { .shift = 4 };
            static unsigned long table[256];

            static __attribute__((noinline)) unsigned long hash(unsigned long key, unsigned int bits)
            {
                return (key * 0x61c8864680b583ebUL) >> (64 - bits);
            }

            static __attribute__((noinline)) int probe(struct stats *s, unsigned long key, int verbose)
            {
                unsigned long slot = hash(key, 8);
                if (table[slot] == key) {
                    s->hits++;
                    return 1;
                }
                s->misses++;
                if (verbose)
                    _printk("miss %lu at %lu\n", key, slot);
                return 0;
            }

            int lookup(unsigned long key)
            {
                return probe(&cache_stats, key, 0);
            }

            int lookup_verbose(unsigned long key)
            {
                return probe(&cache_stats, key, 0) + 1;
            }

            void insert(unsigned long key)
            {
                unsigned long slot = hash(key, 8);
                if (__builtin_expect(table[slot] != 0, 0)) {
                    cache_stats.evictions++;
                    if (cache_stats.evictions > 1000000)
                        __warn_printk("too many evictions: %lu (%s)\n", cache_stats.evictions, __func__);
                    if (key == 0)
                        panic_like("zero key", 22);
                }
                table[slot] = key;
            }

            unsigned long age(void)
            {
                static unsigned long last;
                unsigned long delta = jiffies_like - last;
                last = jiffies_like;
                return delta >> cache_stats.shift;
            }
            """,
            "cache_stats.evictions++;", "cache_stats.evictions += 2;"),
        new("tables", """
            struct static_key_like { int enabled; };
            struct static_key_like tracing_key;
            extern int consume(int);
            extern unsigned long copy_from_user_like(void *to, const void *from, unsigned long n);

            static inline __attribute__((always_inline)) int key_enabled(struct static_key_like *key)
            {
                asm goto("1: .byte 0x0f,0x1f,0x44,0x00,0x00\n"
                         ".pushsection __jump_table, \"aw\"\n"
                         ".balign 8\n"
                         ".long 1b - .\n"
                         ".long %l[yes] - .\n"
                         ".quad %c0 - .\n"
                         ".popsection\n" : : "i"(key) : : yes);
                return 0;
            yes:
                return 1;
            }

            static inline __attribute__((always_inline)) int read_user(int *to, const int *from)
            {
                int err = 0;
                asm volatile("1: movl (%2), %1\n"
                             "2:\n"
                             ".pushsection __ex_table, \"a\"\n"
                             ".balign 4\n"
                             ".long 1b - .\n"
                             ".long 2b - .\n"
                             ".long 0\n"
                             ".popsection\n" : "+r"(err), "=r"(*to) : "r"(from));
                return err;
            }

            int traced_sum(const int *values, int count)
            {
                int sum = 0, v;
                for (int i = 0; i < count; i++) {
                    if (read_user(&v, values + i))
                        return -14;
                    sum += v;
                }
                if (key_enabled(&tracing_key))
                    consume(sum);
                return sum;
            }

            int traced_max(const int *values, int count)
            {
                int best = -2147483647, v;
                for (int i = 0; i < count; i++) {
                    if (read_user(&v, values + i))
                        return -14;
                    if (v > best)
                        best = v;
                }
                if (key_enabled(&tracing_key))
                    consume(best);
                return best;
            }
            """,
            "consume(best);", "consume(best + 1);"),
    ];
}
