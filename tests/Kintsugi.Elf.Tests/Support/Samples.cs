namespace Kintsugi.Elf.Tests.Support;

/// <summary>Source code compiled at test time, chosen to produce the structures the model must handle.</summary>
internal static class Samples
{
    /// <summary>
    /// Static and global functions and data, static locals, string literals, a jump table, function
    /// pointers, TLS, weak, hidden and alias symbols, a constructor, a tentative definition (common
    /// with -fcommon) and a note section.
    /// </summary>
    public const string C = """
        #include <stddef.h>

        extern int external_counter;
        extern int external_function(int);
        extern void external_log(const char *, ...);

        int tentative_definition;
        int initialized_global = 42;
        static int static_data = 7;
        static int zeroed_static;
        const char greeting[] = "hello, kintsugi";
        __thread int per_thread_counter;
        __attribute__((visibility("hidden"))) int hidden_global = 3;
        __attribute__((section(".data.custom"))) long custom_section_value = 5;
        __attribute__((used, section(".note.kintsugi"), aligned(4)))
        static const struct { unsigned namesz, descsz, type; char name[8]; unsigned desc[2]; }
            kintsugi_note = { 8, 8, 0x4b4e5453, "Kintsug", { 1, 2 } };

        static __attribute__((noinline)) int helper(int x)
        {
            static int calls;
            calls++;
            external_log("helper %d %d\n", x, calls);
            return external_function(x) + static_data + calls;
        }

        int dispatch(int op, int value)
        {
            switch (op) {
            case 0: return helper(value);
            case 1: return value * 3 + zeroed_static;
            case 2: return value - external_counter;
            case 3: return greeting[value & 7];
            case 4: return per_thread_counter += value;
            case 5: return tentative_definition + hidden_global;
            case 6: return (int)custom_section_value;
            case 7: return helper(value + 1) * 2;
            default: return -1;
            }
        }

        typedef int (*operation)(int, int);
        int multiply(int a, int b) { return a * b; }
        static int subtract(int a, int b) { return a - b; }
        operation operations[] = { multiply, subtract, dispatch };

        __attribute__((weak)) int weak_function(int x) { return x + 1; }
        int alias_target(int x) { return x * 2; }
        extern int alias_name(int) __attribute__((alias("alias_target")));

        __attribute__((constructor)) static void initialize(void) { zeroed_static = external_function(0); }

        int run(int n)
        {
            int total = 0;
            for (int i = 0; i < n; i++)
                total += operations[i % 3](i, n) + weak_function(i) + alias_name(i);
            return total;
        }
        """;

    /// <summary>Inline functions, templates and a class with a vtable: COMDAT groups.</summary>
    public const string Cpp = """
        #include <cstddef>

        template <typename T> struct Box {
            T value;
            explicit Box(T v) : value(v) {}
            virtual ~Box() {}
            virtual T get() const { return value * 2; }
        };

        template <typename T> T twice(T x) { return x + x; }
        inline int shared_inline(int x) { static int seen; seen += x; return seen; }
        extern int consume(const Box<int> &, const Box<long> &);

        int use_templates(int a, long b)
        {
            Box<int> bi{a};
            Box<long> bl{b};
            return consume(bi, bl) + twice(a) + static_cast<int>(twice(b)) + shared_inline(a);
        }
        """;

    /// <summary>Flag sets the objects are compiled with, one object each.</summary>
    public static readonly (string Name, string File, string Source, string[] Flags)[] Variants =
    [
        ("O2", "sample.c", C, ["-O2", "-fcommon"]),
        ("sections", "sample.c", C, ["-O2", "-ffunction-sections", "-fdata-sections"]),
        ("debug", "sample.c", C, ["-O0", "-g"]),
        ("pic", "sample.c", C, ["-O2", "-fPIC", "-g"]),
        ("kernel", "sample.c", C,
            ["-O2", "-mcmodel=kernel", "-mno-red-zone", "-fno-pic", "-fno-common", "-ffunction-sections",
            "-fdata-sections", "-fno-asynchronous-unwind-tables"]),
        ("cet", "sample.c", C, ["-O1", "-fcf-protection=full", "-fno-common"]),
        ("cpp", "sample.cpp", Cpp, ["-O2", "-g"]),
        ("cpp-sections", "sample.cpp", Cpp, ["-O0", "-ffunction-sections", "-fPIC"]),
    ];
}
