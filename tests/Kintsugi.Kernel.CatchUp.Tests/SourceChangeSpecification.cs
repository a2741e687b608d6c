namespace Kintsugi.Kernel.CatchUp.Tests;

/// <summary>Headers compared construct by construct: what their change means for the units that include them.</summary>
public sealed class SourceChangeSpecification
{
    private const string Header = """
        /* SPDX-License-Identifier: GPL-2.0 */
        #ifndef _LINUX_EXAMPLE_H
        #define _LINUX_EXAMPLE_H
        #include <linux/types.h>

        #define EXAMPLE_SLOTS 16
        #define example_valid(e) ((e)->len <= EXAMPLE_SLOTS)

        struct example {
            int len;
            /* the payload */
            char data[EXAMPLE_SLOTS];
        };

        enum example_state { EXAMPLE_IDLE, EXAMPLE_BUSY };

        extern int example_submit(struct example *e, int flags);

        static inline bool example_full(const struct example *e)
        {
            return e->len == EXAMPLE_SLOTS;
        }
        #endif
        """;

    private static HeaderVerdict Change(string from, string to) =>
        SourceChange.ClassifyHeader(Header, Header.Replace(from, to));

    [Fact]
    public void A_function_defined_after_an_attribute_is_known_by_its_name()
    {
        var changes = SourceChange.Compare("int a;\n", """
            int a;
            __attribute__((noipa)) int example_shift(int (*pick)(void))
            {
            	return pick();
            }
            """);

        Assert.Equal(["example_shift"], SourceChange.ChangedFunctions(changes));
    }

    [Fact]
    public void A_changed_comment_changes_no_code()
    {
        Assert.Equal(HeaderImpact.NoCode, Change("/* the payload */", "/* the payload, EXAMPLE_SLOTS bytes */").Impact);
    }

    [Fact]
    public void A_changed_inline_function_is_code_of_every_includer()
    {
        var verdict = Change("return e->len == EXAMPLE_SLOTS;", "return e->len >= EXAMPLE_SLOTS;");

        Assert.Equal(HeaderImpact.Code, verdict.Impact);
        Assert.Equal("example_full", Assert.Single(verdict.Constructs).Name);
    }

    [Fact]
    public void A_changed_function_like_macro_is_code_of_every_includer()
    {
        Assert.Equal(HeaderImpact.Code, Change("((e)->len <= EXAMPLE_SLOTS)", "((e)->len < EXAMPLE_SLOTS)").Impact);
    }

    [Fact]
    public void A_new_structure_member_refuses_the_dependents_naming_the_structure()
    {
        var verdict = Change("    int len;\n", "    int len;\n    int flags;\n");

        Assert.Equal(HeaderImpact.Refused, verdict.Impact);
        Assert.Contains("layout of struct example", Assert.Single(verdict.Reasons));
    }

    [Fact]
    public void A_changed_constant_that_sizes_an_array_is_refused()
    {
        var verdict = Change("#define EXAMPLE_SLOTS 16", "#define EXAMPLE_SLOTS 32");

        Assert.Equal(HeaderImpact.Refused, verdict.Impact);
        Assert.Contains(verdict.Reasons, r => r.Contains("EXAMPLE_SLOTS"));
    }

    [Fact]
    public void A_changed_prototype_is_refused_because_callers_keep_the_old_signature()
    {
        var verdict = Change("int example_submit(struct example *e, int flags);",
            "int example_submit(struct example *e, long flags);");

        Assert.Equal(HeaderImpact.Refused, verdict.Impact);
        Assert.Contains(verdict.Reasons, r => r.Contains("example_submit"));
    }

    [Fact]
    public void An_enumerator_inserted_before_others_renumbers_and_is_refused()
    {
        Assert.Equal(HeaderImpact.Refused,
            Change("{ EXAMPLE_IDLE, EXAMPLE_BUSY }", "{ EXAMPLE_NEW, EXAMPLE_IDLE, EXAMPLE_BUSY }").Impact);
    }

    [Fact]
    public void An_enumerator_appended_at_the_end_is_code()
    {
        Assert.Equal(HeaderImpact.Code,
            Change("{ EXAMPLE_IDLE, EXAMPLE_BUSY }", "{ EXAMPLE_IDLE, EXAMPLE_BUSY, EXAMPLE_DONE }").Impact);
    }

    [Fact]
    public void A_new_declaration_alone_compiles_to_nothing()
    {
        var verdict = Change("extern int example_submit(",
            "extern void example_reset(struct example *e);\nextern int example_submit(");

        Assert.Equal(HeaderImpact.DeclarationsOnly, verdict.Impact);
    }

    [Fact]
    public void A_new_constant_macro_compiles_to_nothing_and_is_named_for_the_tree_to_check()
    {
        var verdict = Change("#define EXAMPLE_SLOTS 16", "#define EXAMPLE_SLOTS 16\n#define EXAMPLE_FLAG_FAST 0x4");

        Assert.Equal(HeaderImpact.DeclarationsOnly, verdict.Impact);
        Assert.Equal(["EXAMPLE_FLAG_FAST"], verdict.AddedMacros);
    }

    [Fact]
    public void A_new_macro_that_a_source_of_the_running_kernel_names_is_refused()
    {
        var verdict = SourceChange.WithNamedMacros(
            Change("#define EXAMPLE_SLOTS 16", "#define EXAMPLE_SLOTS 16\n#define EXAMPLE_FLAG_FAST 0x4"),
            new Dictionary<string, string> { ["EXAMPLE_FLAG_FAST"] = "drivers/example/core.c" });

        Assert.Equal(HeaderImpact.Refused, verdict.Impact);
        Assert.Contains("EXAMPLE_FLAG_FAST, which the running kernel's sources already name (drivers/example/core.c)",
            Assert.Single(verdict.Reasons), StringComparison.Ordinal);
    }

    [Fact]
    public void A_new_conditional_is_refused_because_what_compiles_under_it_cannot_be_told()
    {
        var verdict = Change("static inline bool example_full",
            "#ifdef CONFIG_EXAMPLE\n#endif\nstatic inline bool example_full");

        Assert.Equal(HeaderImpact.Refused, verdict.Impact);
    }

    [Fact]
    public void The_changed_functions_of_a_c_file_are_named_and_comments_do_not_count()
    {
        const string before = "static int a(void)\n{\n\treturn 1;\n}\n\n/* b */\nint b(int x)\n{\n\tif (x) { return " +
            "2; }\n\treturn 0;\n}\n";
        var after = before.Replace("return 2;", "return 3;").Replace("/* b */", "/* b, fixed */");

        var changes = SourceChange.Compare(before, after);

        Assert.Equal(["b"], SourceChange.ChangedFunctions(changes));
    }
}
