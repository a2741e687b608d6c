using System.Text;
using Kintsugi.Diff;
using Kintsugi.Elf;
using Kintsugi.Kernel.Archive;
using Kintsugi.Kernel.Build.Symbols;

namespace Kintsugi.Kernel.Build.Livepatch;

/// <summary>
/// Turns diff objects into a loadable livepatch module: generated registration code (klp_patch, klp_object,
/// klp_func, callbacks) linked with the diff objects by kbuild against the target's headers, then the
/// references livepatch must bind moved into <c>.klp.rela.*</c> sections and the manifest embedded.
/// </summary>
public static class LivepatchModuleBuilder
{
    public const string ManifestSection = ".kintsugi.manifest";

    public static Task<string> BuildAsync(FetchedKernel kernel, LivepatchModuleSpec spec, ModuleSymvers exports,
        string directory, CancellationToken cancellation = default) =>
        kernel.Parts.HasFlag(KernelParts.Headers)
            ? BuildAsync(kernel.Target, kernel.HeadersDirectory, spec, exports, directory, cancellation)
            : throw new ModuleBuildException($"kernel {kernel.Target.Release} was fetched without its headers");

    /// <param name="buildDirectory">The kbuild tree to link against: the headers package, or a prepared source
    /// tree.</param>
    /// <param name="toolchain">Where kbuild runs: the toolchain the target's tree was prepared with (default: the
    /// host).</param>
    /// <param name="visible">The host directories kbuild reads besides the module's own (the kernel's cache
    /// entry).</param>
    public static async Task<string> BuildAsync(KernelTarget target, string buildDirectory, LivepatchModuleSpec spec,
        ModuleSymvers exports, string directory,
        CancellationToken cancellation = default, Toolchains.Toolchain? toolchain = null,
        IReadOnlyList<string>? visible = null)
    {
        Directory.CreateDirectory(directory);
        var objects = new List<string>();
        for (var i = 0; i < spec.DiffObjects.Count; i++)
        {
            var name = $"kintsugi_diff_{i}.o";
            // The differ's objects are final (no padding symbols for objtool to clash with): linked as they are.
            File.Copy(spec.DiffObjects[i], Path.Combine(directory, name), overwrite: true);
            // Kbuild links a prebuilt object only when it finds the command file it would have written.
            await File.WriteAllTextAsync(Path.Combine(directory, $".{name}.cmd"), "", cancellation);
            objects.Add(name);
        }
        await File.WriteAllTextAsync(Path.Combine(directory, "kintsugi_register.c"), RegistrationSource(spec, target),
            cancellation);
        await File.WriteAllTextAsync(Path.Combine(directory, "Kbuild"),
            $"obj-m := {spec.ModuleName}.o\n{spec.ModuleName}-y := kintsugi_register.o {string.Join(' ', objects)}\n",
            cancellation);

        // Bound symbols are undefined until livepatch binds them; modpost must report them, not fail on them.
        var result = await (toolchain ?? Toolchains.Toolchain.Host).RunAsync("make",
            ["-C", buildDirectory, $"M={Path.GetFullPath(directory)}", $"-j{Environment.ProcessorCount}",
                "KBUILD_MODPOST_WARN=1", "modules"],
            Path.GetFullPath(directory), [.. visible ?? [], buildDirectory, Path.GetFullPath(directory)],
            cancellation: cancellation);
        BuildInterruption.ThrowIfInterrupted(result, $"linking livepatch module {spec.ModuleName}");
        var module = Path.Combine(directory, spec.ModuleName + ".ko");
        if (!result.Succeeded || !File.Exists(module))
            throw new ModuleBuildException($"linking livepatch module {spec.ModuleName} failed:\n" +
                string.Join('\n',
                    (result.StandardError + result.StandardOutput).Split('\n').Where(l => l.Length > 0).TakeLast(30)));

        var elf = ElfObject.Load(module);
        KlpRelocations.Convert(elf, spec.Bindings.Any(b => b.UndefinedName == UtsSemaphoreBinding.UndefinedName)
            ? spec.Bindings : [.. spec.Bindings, UtsSemaphoreBinding]);
        var unresolved = elf.SymbolTable!.Symbols
            .Where(s =>
                s.IsUndefined && s.Name.Length > 0 && !BindingPolicy.LinkedByModuleLoader(exports.Exports, s.Name))
            .Select(s => s.Name).Distinct().Order(StringComparer.Ordinal).ToList();
        if (unresolved.Count > 0)
            throw new ModuleBuildException($"livepatch module {spec.ModuleName} references symbols that are neither " +
                $"exported by vmlinux nor bound by livepatch: {string.Join(", ", unresolved)}");
        WithoutModuleDependencies(elf);
        elf.Sections.Add(new ElfDataSection(ManifestSection, ElfSectionType.ProgBits, spec.Manifest) { Alignment = 1 });
        elf.Save(module);
        return module;
    }

    /// <summary>
    /// modpost wrote <c>depends=</c> from the symbols undefined when kbuild linked the module, other modules' exports
    /// among them; those are livepatch relocations now, and what is still undefined is vmlinux's (checked above). A
    /// livepatch depends on no module: modprobe must not load the patched module's dependencies to load it.
    /// </summary>
    private static void WithoutModuleDependencies(ElfObject module)
    {
        if (module.FindSection(".modinfo") is not ElfDataSection modinfo) return;
        var data = modinfo.Data;
        var key = Encoding.ASCII.GetBytes("depends=");
        for (var start = 0; start < data.Length; start = Array.IndexOf(data, (byte)0, start) is var end and >= 0
            ? end + 1 : data.Length)
        {
            if (!data.AsSpan(start).StartsWith(key)) continue;
            // Blanked in place (NUL padding, which the kernel and modinfo skip), so every other entry keeps its offset.
            for (var i = start + key.Length; i < data.Length && data[i] != 0; i++) data[i] = 0;
        }
    }

    /// <summary>The generated C registration code, readable on purpose: it is the patch's table of contents.</summary>
    public static string RegistrationSource(LivepatchModuleSpec spec, KernelTarget target)
    {
        var c = new StringBuilder();
        c.AppendLine($"// Generated by Kintsugi for {target.Release} (build-id {target.BuildId}). Do not edit.");
        c.AppendLine("#include <linux/kernel.h>");
        c.AppendLine("#include <linux/module.h>");
        c.AppendLine("#include <linux/livepatch.h>");
        c.AppendLine("#include <linux/rwsem.h>");
        c.AppendLine("#include <linux/string.h>");
        c.AppendLine("#include <linux/utsname.h>");
        c.AppendLine();
        foreach (var function in spec.Objects.SelectMany(o => o.Functions))
            c.AppendLine($"void {function.NewSymbol}(void); /* replaces {function.OldName} */");
        foreach (var callbacks in spec.Objects.SelectMany(o => o.Callbacks))
        {
            if (callbacks.PrePatch is { } prePatch) c.AppendLine($"int {prePatch}(struct klp_object *obj);");
            foreach (var name in new[] { callbacks.PostPatch, callbacks.PreUnpatch,
                callbacks.PostUnpatch }.OfType<string>())
                c.AppendLine($"void {name}(struct klp_object *obj);");
        }
        c.AppendLine();
        c.Append(EffectiveUnameSource);
        c.AppendLine();
        // The uname callbacks hang on vmlinux's object; a patch of modules only gets one without functions.
        var objects = spec.Objects.Any(o => o.IsVmlinux) ? spec.Objects
            : [new KlpObject(KernelObjectNames.Vmlinux, [], []), .. spec.Objects];
        spec = spec with { Objects = objects };
        for (var i = 0; i < spec.Objects.Count; i++)
            AppendCallbackChains(c, i, spec.Objects[i].Callbacks, spec.Objects[i].IsVmlinux);
        for (var i = 0; i < spec.Objects.Count; i++)
        {
            c.AppendLine($"static struct klp_func functions_{i}[] = {{");
            foreach (var function in spec.Objects[i].Functions)
                c.AppendLine($"\t{{ .old_name = {Literal(function.OldName)}, .new_func = {function.NewSymbol}, " +
                    $".old_sympos = {function.OldSympos} }},");
            c.AppendLine("\t{ }");
            c.AppendLine("};");
        }
        c.AppendLine();
        c.AppendLine("static struct klp_object objects[] = {");
        for (var i = 0; i < spec.Objects.Count; i++)
        {
            var o = spec.Objects[i];
            c.Append($"\t{{ .name = {(o.IsVmlinux ? "NULL" : Literal(o.Name))}, .funcs = functions_{i}");
            if (o.Callbacks.Count > 0 || o.IsVmlinux)
            {
                c.Append(", .callbacks = {");
                foreach (var kind in CallbackKinds)
                    if (o.Callbacks.Any(u => kind.Of(u) is not null) || (o.IsVmlinux && kind.Uname is not null))
                        c.Append($" .{kind.Name} = {ChainName(kind, i)},");
                c.Append(" }");
            }
            c.AppendLine(" },");
        }
        c.AppendLine("\t{ }");
        c.AppendLine("};");
        c.AppendLine();
        c.AppendLine("static struct klp_patch patch = {");
        c.AppendLine("\t.mod = THIS_MODULE,");
        c.AppendLine("\t.objs = objects,");
        c.AppendLine($"\t.replace = {(spec.Replace ? "true" : "false")},");
        c.AppendLine("};");
        c.AppendLine();
        c.AppendLine("static int __init kintsugi_patch_init(void)");
        c.AppendLine("{");
        c.AppendLine("\treturn klp_enable_patch(&patch);");
        c.AppendLine("}");
        c.AppendLine();
        c.AppendLine("static void __exit kintsugi_patch_exit(void)");
        c.AppendLine("{");
        c.AppendLine("}");
        c.AppendLine();
        c.AppendLine("module_init(kintsugi_patch_init);");
        c.AppendLine("module_exit(kintsugi_patch_exit);");
        c.AppendLine("MODULE_LICENSE(\"GPL\");");
        c.AppendLine("MODULE_INFO(livepatch, \"Y\");");
        c.AppendLine($"MODULE_DESCRIPTION({Literal(spec.Description)});");
        if (spec.EffectiveVersion is { } version)
            c.AppendLine($"MODULE_INFO({LoadedRecord.EffectiveVersionKey}, {Literal(version)});");
        c.AppendLine($"MODULE_INFO({EffectiveUname.ModInfoKey}, \"1\");");
        return c.ToString();
    }

    /// <summary>
    /// The binding the uname callbacks need: <c>uts_sem</c>, which guards the version string, is not exported.
    /// </summary>
    public static KlpSymbolBinding UtsSemaphoreBinding { get; } = new("uts_sem", KernelObjectNames.Vmlinux, "uts_sem",
        Sympos.Unique);

    /// <summary>
    /// Scanners read <c>uname -v</c> and <c>/proc/version</c>, both <c>init_uts_ns.name.version</c>, which only kernel
    /// code can write. Every module carries this; it acts only when the machine passes both strings at load
    /// (<see cref="EffectiveUname"/>, an opt-in): the effective one is shown while the patch is applied, the real one
    /// again once it is removed. An atomic replacement runs only the new level's callbacks, so a level loaded without
    /// an effective string puts the real one back. docs/decisions/effective-uname.md.
    /// </summary>
    private const string EffectiveUnameSource = $$"""
        static char *{{EffectiveUname.RealParameter}};
        module_param({{EffectiveUname.RealParameter}}, charp, 0400);
        MODULE_PARM_DESC({{EffectiveUname.RealParameter}}, "this kernel's own version string (uname -v), shown again when the patch is removed");
        static char *{{EffectiveUname.EffectiveParameter}};
        module_param({{EffectiveUname.EffectiveParameter}}, charp, 0400);
        MODULE_PARM_DESC({{EffectiveUname.EffectiveParameter}}, "the version string uname -v and /proc/version show while the patch is applied");

        static void kintsugi_uname_write(const char *version)
        {
        	if (!version || !*version)
        		return;
        	down_write(&uts_sem);
        	strscpy(init_uts_ns.name.version, version, sizeof(init_uts_ns.name.version));
        	up_write(&uts_sem);
        }

        static void kintsugi_uname_post_patch(void)
        {
        	if ({{EffectiveUname.EffectiveParameter}} && *{{EffectiveUname.EffectiveParameter}})
        		kintsugi_uname_write({{EffectiveUname.EffectiveParameter}});
        	else
        		kintsugi_uname_write({{EffectiveUname.RealParameter}});
        }

        static void kintsugi_uname_pre_unpatch(void)
        {
        	kintsugi_uname_write({{EffectiveUname.RealParameter}});
        }

        """;

    private sealed record CallbackKind(string Name, Func<KlpCallbacks, string?> Of, bool Reverse, string? Uname = null);

    private static readonly CallbackKind[] CallbackKinds =
    [
        new("pre_patch", k => k.PrePatch, Reverse: false),
        new("post_patch", k => k.PostPatch, Reverse: false, Uname: "kintsugi_uname_post_patch"),
        new("pre_unpatch", k => k.PreUnpatch, Reverse: true, Uname: "kintsugi_uname_pre_unpatch"),
        new("post_unpatch", k => k.PostUnpatch, Reverse: true),
    ];

    private static string ChainName(CallbackKind kind, int objectIndex) => $"kintsugi_{kind.Name}_{objectIndex}";

    /// <summary>One function per callback kind of an object, calling every unit's callback of that kind.</summary>
    /// <param name="vmlinux">The object is vmlinux: its post-patch chain ends with the uname one, its pre-unpatch chain
    /// starts with it.</param>
    private static void AppendCallbackChains(StringBuilder c, int objectIndex, IReadOnlyList<KlpCallbacks> units,
        bool vmlinux)
    {
        foreach (var kind in CallbackKinds)
        {
            var calls = (kind.Reverse ? units.Reverse() : units).Select(kind.Of).OfType<string>().ToList();
            var uname = vmlinux ? kind.Uname : null;
            if (calls.Count == 0 && uname is null) continue;
            if (kind.Name == "pre_patch")
            {
                c.AppendLine($"static int {ChainName(kind, objectIndex)}(struct klp_object *obj)");
                c.AppendLine("{");
                c.AppendLine("	int ret;");
                for (var u = 0; u < units.Count; u++)
                {
                    if (units[u].PrePatch is not { } prePatch) continue;
                    c.AppendLine($"	ret = {prePatch}(obj);");
                    c.AppendLine("	if (ret) {");
                    // The units already prepared are undone, as livepatch undoes the objects before a refusing one.
                    foreach (var undo in units.Take(u).Reverse().Select(k => k.PostUnpatch).OfType<string>())
                        c.AppendLine($"		{undo}(obj);");
                    c.AppendLine("		return ret;");
                    c.AppendLine("	}");
                }
                c.AppendLine("	return 0;");
            }
            else
            {
                c.AppendLine($"static void {ChainName(kind, objectIndex)}(struct klp_object *obj)");
                c.AppendLine("{");
                if (uname is not null && kind.Reverse) c.AppendLine($"	{uname}();");
                foreach (var call in calls) c.AppendLine($"	{call}(obj);");
                if (uname is not null && !kind.Reverse) c.AppendLine($"	{uname}();");
            }
            c.AppendLine("}");
            c.AppendLine();
        }
    }

    /// <summary>A C string literal; bytes outside printable ASCII as octal escapes, which cannot run into the next
    /// character.</summary>
    private static string Literal(string text)
    {
        var c = new StringBuilder("\"");
        foreach (var b in Encoding.UTF8.GetBytes(text))
            c.Append(b switch
            {
                (byte)'"' => "\\\"",
                (byte)'\\' => "\\\\",
                < 0x20 or > 0x7e => "\\" + System.Convert.ToString(b, 8).PadLeft(3, '0'),
                _ => ((char)b).ToString(),
            });
        return c.Append('"').ToString();
    }
}
