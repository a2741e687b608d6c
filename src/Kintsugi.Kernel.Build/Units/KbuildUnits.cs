using System.Text.RegularExpressions;
using Kintsugi.Kernel.Build.Toolchains;

namespace Kintsugi.Kernel.Build.Units;

/// <summary>A translation unit of the target kernel: its source, its object, and the kernel object it is linked
/// into.</summary>
/// <param name="PatchedObject"><c>vmlinux</c>, or the module's name as the kernel knows it ('-' written as
/// '_').</param>
/// <param name="ListedAs">
/// kbuild's own name for the object when a Makefile outside the object's directory lists it through a
/// relative path (<c>arch/x86/kvm/../../../virt/kvm/kvm_main.o</c>); null when the path is its own name.
/// </param>
public sealed record TranslationUnit(string SourcePath, string ObjectPath, string PatchedObject,
    string? ListedAs = null)
{
    public bool IsVmlinux => PatchedObject == KernelObjectNames.Vmlinux;

    /// <summary>
    /// The goal that makes kbuild compile the unit with the flags of the Makefile that lists it: make descends
    /// along the goal's path, so virt/kvm/kvm_main.o is only known by the name arch/x86/kvm gives it.
    /// </summary>
    public string MakeGoal => ListedAs ?? ObjectPath;
}

/// <summary>
/// Finds where kbuild links a C file of a prepared x86-64 tree: into vmlinux, into a module (and which), or
/// nowhere, with the proof. The object lists come from kbuild's own evaluation of the Makefiles
/// (<see cref="KbuildMakefiles"/>); this class follows them as kbuild does: an object may be listed by
/// any enclosing directory (<c>kvm-amd-y += svm/svm.o</c> in arch/x86/kvm), as a part of a composite
/// object, and its directory must be descended into from the top; a C file that is no unit of its own is
/// compiled as part of every built unit that #includes it.
/// </summary>
public sealed partial class KbuildUnits
{
    private static readonly string[] HostOnlyRoots = ["Documentation", "tools", "scripts", "usr", "samples",
        "LICENSES"];

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<KbuildMakefiles>>
        Evaluated = new(StringComparer.Ordinal);

    private readonly string _tree;
    private readonly IReadOnlyDictionary<string, string> _config;
    private readonly KbuildMakefiles _makefiles;
    private readonly Lazy<HeaderDependents> _includes;
    private readonly Lazy<IReadOnlyList<(string Path, string Text)>> _allMakefiles;
    // Resolving the includers of a common header asks about thousands of files: every answer that scans all
    // Makefiles is computed once per resolver.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, UnitResolution> _ownUnits =
        new(StringComparer.Ordinal);
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, IReadOnlyList<string>> _mentioning =
        new(StringComparer.Ordinal);
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> _scripts =
        new(StringComparer.Ordinal);
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, string[]> _makefileLines =
        new(StringComparer.Ordinal);
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Regex> _wordPatterns =
        new(StringComparer.Ordinal);
    private readonly Lazy<ILookup<string, (string Directory, string ObjectPath)>> _rules;

    private KbuildUnits(string tree, IReadOnlyDictionary<string, string> config, Toolchain toolchain,
        IReadOnlyList<string> visible)
    {
        _tree = tree;
        _config = config;
        // A prepared tree does not change, so its evaluated Makefiles are shared by every resolver of the process.
        _makefiles = Evaluated.GetOrAdd(CacheKey(tree, toolchain),
            _ => new Lazy<KbuildMakefiles>(() => new KbuildMakefiles(Path.GetFullPath(tree), toolchain, visible)))
            .Value;
        _includes = new(() => HeaderDependents.Of(tree));
        _rules = new(IndexRules);
        _allMakefiles = new(() => Directory.EnumerateFiles(tree, "*", SearchOption.AllDirectories)
            .Where(f => Path.GetFileName(f) is "Makefile" or "Kbuild"
                || Path.GetFileName(f).StartsWith("Makefile.", StringComparison.Ordinal))
            .Select(f => Path.GetRelativePath(tree, f)).Where(f => !f.StartsWith("tools/", StringComparison.Ordinal))
            .Select(f => (f, File.ReadAllText(Path.Combine(tree, f)))).ToList());
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<KbuildUnits>> Opened =
        new(StringComparer.Ordinal);

    /// <summary>A prepared tree, its Makefiles evaluated with the toolchain that prepared it.</summary>
    public static KbuildUnits Open(KernelSourceTree tree) => Open(tree.Directory, tree.Toolchain, tree.Visible);

    /// <summary>A tree prepared with the host's own compiler.</summary>
    public static KbuildUnits Open(string tree) => Open(tree, Toolchain.Host, [tree]);

    /// <summary>The resolver of a prepared tree, made once per process (a prepared tree and its .config do not
    /// change).</summary>
    private static KbuildUnits Open(string tree, Toolchain toolchain, IReadOnlyList<string> visible) =>
        Opened.GetOrAdd(CacheKey(tree, toolchain),
            _ => new Lazy<KbuildUnits>(() => Read(Path.GetFullPath(tree), toolchain, visible))).Value;

    // Makefiles answer differently with another compiler (cc-option, CONFIG_CC_*), so the toolchain is part of the key.
    private static string CacheKey(string tree, Toolchain toolchain) =>
        $"{Path.GetFullPath(tree)}\n{toolchain.Identity}";

    private static KbuildUnits Read(string tree, Toolchain toolchain, IReadOnlyList<string> visible)
    {
        var config = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines(Path.Combine(tree, ".config")))
        {
            if (!line.StartsWith("CONFIG_", StringComparison.Ordinal)) continue;
            var equals = line.IndexOf('=');
            if (equals > 0) config[line[..equals]] = line[(equals + 1)..];
        }
        return new KbuildUnits(tree, config, toolchain, visible);
    }

    /// <summary>The tree's #include graph, read once per process.</summary>
    public HeaderDependents Includes => _includes.Value;

    /// <summary>The #include graph, saying so first when this call is the one that reads it (minutes on a cold
    /// cache).</summary>
    public HeaderDependents ReadIncludes(Action<string> progress)
    {
        if (!_includes.IsValueCreated) progress("reading the #include graph of the tree");
        return _includes.Value;
    }

    /// <summary>The unit the C file compiles to by itself (not counting units that #include it), or null.</summary>
    public TranslationUnit? Locate(string sourcePath) =>
        ResolveOwnUnit(sourcePath) is UnitResolution.Built built ? built.Units[0] : null;

    /// <summary>
    /// What this kernel makes of a C file: the units that compile it (its own, or those that #include it),
    /// "not built" with the proof, or "cannot tell" with the reason.
    /// </summary>
    public UnitResolution Resolve(string sourcePath)
    {
        var own = ResolveOwnUnit(sourcePath);
        if (own is not UnitResolution.NotBuilt { Proof.Reason: NotBuiltReason.ObjectNotListed } notListed) return own;
        // No Makefile makes an object of it: it may be #included into units that are (kernel/sched/psi.c into
        // build_utility.c).
        var includers = _includes.Value.SourcesIncluding(sourcePath).Where(s => s != sourcePath).ToList();
        if (includers.Count == 0) return own;
        var resolved = includers.Select(ResolveOwnUnit).ToList();
        var built = resolved.OfType<UnitResolution.Built>().SelectMany(b => b.Units).ToList();
        if (built.Count > 0) return new UnitResolution.Built(sourcePath, built);
        if (resolved.OfType<UnitResolution.Unresolved>().FirstOrDefault() is { } unresolved)
            return new UnitResolution.Unresolved(sourcePath,
                $"it is #included by {unresolved.SourcePath}, and of that: {unresolved.Reason}");
        return new UnitResolution.NotBuilt(sourcePath, new NotBuiltProof(NotBuiltReason.IncludersNotBuilt,
            $"{notListed.Proof.Statement}; the units that #include it are not built either",
            [.. resolved.OfType<UnitResolution.NotBuilt>().Select(n => $"{n.SourcePath}: {n.Proof}")]));
    }

    /// <summary>
    /// What this kernel compiles a header into: every built unit whose C file #includes it, directly or through
    /// other headers. "Not built" only when every C file that includes it is proven not built. A header that no C
    /// file includes by name is unresolved, not "not built": the include graph does not follow includes spelled
    /// through macros (<c>#include TRACE_INCLUDE(...)</c>) or given on the command line (<c>-include</c>).
    /// More than <paramref name="limit"/> built units is "too many", which says more than an includer that cannot be
    /// placed: the answer is then the units. With <paramref name="stopAtLimit"/> resolution stops there (the thousands
    /// of includers of a core header need not all be placed); without it, every unit is listed.
    /// </summary>
    public HeaderResolution ResolveHeader(string headerPath, int limit = int.MaxValue, bool stopAtLimit = true)
    {
        var sources = _includes.Value.SourcesIncluding(headerPath)
            .Where(s => s.EndsWith(".c", StringComparison.Ordinal)).ToList();
        if (sources.Count == 0)
            return new HeaderResolution(headerPath, 0, new UnitResolution.Unresolved(headerPath,
                "no C file of the tree #includes it by name; it may be included through a macro or -include, which the "
                +
                "include graph does not follow"), Partial: false);
        var resolved = new List<UnitResolution>();
        var built = new SortedDictionary<string, TranslationUnit>(StringComparer.Ordinal);
        // In parallel batches (an answer may run make), stopping at the first batch past the limit.
        foreach (var batch in sources.Chunk(4 * Environment.ProcessorCount))
        {
            var answers = batch.AsParallel().AsOrdered().WithDegreeOfParallelism(Environment.ProcessorCount)
                .Select(Resolve).ToList();
            resolved.AddRange(answers);
            foreach (var unit in answers.OfType<UnitResolution.Built>().SelectMany(b => b.Units))
                built.TryAdd(unit.SourcePath, unit);
            if (stopAtLimit && built.Count > limit)
                return new HeaderResolution(headerPath, sources.Count,
                    new UnitResolution.Built(headerPath, [.. built.Values]), Partial: resolved.Count < sources.Count);
        }
        if (built.Count > limit)
            return new HeaderResolution(headerPath, sources.Count,
                new UnitResolution.Built(headerPath, [.. built.Values]), Partial: false);
        if (resolved.OfType<UnitResolution.Unresolved>().FirstOrDefault() is { } unknown)
            return new HeaderResolution(headerPath, sources.Count, new UnitResolution.Unresolved(headerPath,
                $"it is #included by {unknown.SourcePath}, and of that: {unknown.Reason}"), Partial: false);
        if (built.Count == 0)
            return new HeaderResolution(headerPath, sources.Count,
                new UnitResolution.NotBuilt(headerPath, new NotBuiltProof(
                NotBuiltReason.IncludersNotBuilt,
                $"each of the {sources.Count} C file(s) that #include it is proven not built",
                [.. resolved.OfType<UnitResolution.NotBuilt>().Take(20).Select(n => n.ToString())])), Partial: false);
        return new HeaderResolution(headerPath, sources.Count, new UnitResolution.Built(headerPath, [.. built.Values]),
            Partial: false);
    }

    private UnitResolution ResolveOwnUnit(string sourcePath) => _ownUnits.GetOrAdd(sourcePath, ResolveOwnUnitOnce);

    private UnitResolution ResolveOwnUnitOnce(string sourcePath)
    {
        if (!sourcePath.EndsWith(".c", StringComparison.Ordinal))
            throw new ModuleBuildException($"{sourcePath} is not a C file");
        if (!File.Exists(Path.Combine(_tree, sourcePath)))
            return new UnitResolution.Unresolved(sourcePath, "the file is not in the kernel's source tree");
        var objectPath = sourcePath[..^2] + ".o";
        var directory = Path.GetDirectoryName(sourcePath) ?? "";
        // A Makefile may compile a source from elsewhere under an object name of its own
        // ($(obj)/relo_core.o: $(srctree)/tools/lib/bpf/relo_core.c in kernel/bpf).
        foreach (var (listing, ruleObject) in RuleObjects(sourcePath))
            if (_makefiles.Lists(listing) is { Error: null } ruled && ruled.Place(ruleObject) is { } placement)
                return WithDescent(sourcePath, ruleObject, listing, placement);
        // 6.12 links scripts/module-common.c into every module.
        if (sourcePath.StartsWith("scripts/", StringComparison.Ordinal)
            && NamedBy("scripts/Makefile.modfinal", Path.GetFileName(sourcePath)))
            return new UnitResolution.Unresolved(sourcePath,
                "scripts/Makefile.modfinal links it into every module: a fix to it changes every module, " +
                "which one livepatch cannot replace; it needs a kernel update");
        var segments = sourcePath.Split('/');
        if (segments is ["arch", var architecture, ..] && architecture != "x86")
            return new UnitResolution.NotBuilt(sourcePath, new NotBuiltProof(NotBuiltReason.OtherArchitecture,
                $"it belongs to arch/{architecture}; this kernel is built for x86 and kbuild descends only into " +
                $"arch/x86", []));
        if (HostOnlyRoots.Contains(segments[0]) && !_makefiles.TopDirectories.Contains(segments[0]))
            return new UnitResolution.NotBuilt(sourcePath, new NotBuiltProof(NotBuiltReason.OutsideKernelBuild,
                $"{segments[0]}/ holds host tools, documentation or samples: the top Makefile does not descend into " +
                $"it for vmlinux or modules",
                [
                    $"top-level directories built: " +
                    $"{string.Join(" ", _makefiles.TopDirectories.Order(StringComparer.Ordinal))}"]));

        // A few objects are compiled and linked by the final link steps, not from an object list.
        if (NamedBy("scripts/link-vmlinux.sh", objectPath))
            return new UnitResolution.Built(sourcePath,
                [new TranslationUnit(sourcePath, objectPath, KernelObjectNames.Vmlinux)]);
        var evaluated = new List<string>();
        string? failed = null, nearest = null;
        // kbuild lists an object in its own directory's Makefile or in an enclosing one (kvm-amd-y += svm/svm.o).
        foreach (var listing in Ancestors(directory))
        {
            if (_makefiles.Lists(listing) is not { } lists) continue;
            nearest ??= listing;
            // A Makefile that cannot be evaluated alone (a fragment of its parent's) is decided by the directories
            // above it.
            if (lists.Error is { } error) { failed ??= error; continue; }
            evaluated.Add(_makefiles.MakefileOf(listing));
            if (lists.Place(objectPath) is not { } placement) continue;
            return WithDescent(sourcePath, objectPath, listing, placement);
        }
        // A Makefile elsewhere may name it through a relative path (kvm-y += ../../../virt/kvm/kvm_main.o, from an
        // included fragment).
        foreach (var elsewhere in ListingCandidates(Path.GetFileName(objectPath)))
        {
            if (Ancestors(directory).Contains(elsewhere) || OtherArchitecture(elsewhere)
                || _makefiles.Lists(elsewhere) is not { Error: null } lists) continue;
            if (lists.Place(objectPath) is { } placement && WithDescent(sourcePath, objectPath, elsewhere,
                placement) is UnitResolution.Built built) return built;
        }
        // Nothing lists it. If kbuild does not even enter a directory around it, that is the proof.
        if (EnclosingDirectoryNotEntered(directory) is { } notEntered)
            return new UnitResolution.NotBuilt(sourcePath, notEntered);
        if (failed is not null) return new UnitResolution.Unresolved(sourcePath, failed);
        return NotListed(sourcePath, objectPath, evaluated);
    }

    private static bool OtherArchitecture(string directory) =>
        directory.StartsWith("arch/", StringComparison.Ordinal)
        && !directory.StartsWith("arch/x86", StringComparison.Ordinal);

    /// <summary>
    /// The proof that kbuild never enters a directory enclosing <paramref name="directory"/>: the nearest one
    /// whose parent does not list it, provided no Makefile outside it includes one of its Makefiles (amdgpu's
    /// Makefile includes amdkfd/Makefile: then the includer decides, and the search goes up). Null when the
    /// directories are entered or that cannot be proven.
    /// </summary>
    private NotBuiltProof? EnclosingDirectoryNotEntered(string directory, int depth = 0)
    {
        if (depth > 4) return null;
        foreach (var enclosing in Ancestors(directory).Where(d => d.Length > 0))
        {
            if (_makefiles.Lists(enclosing) is not { Error: null }) continue;
            var descent = Descent(enclosing);
            if (descent.Unresolved is not null) return null;
            if (descent.NotBuilt is not { } proof) return null;
            var includers = IncludersFromOutside(enclosing);
            if (includers.Count == 0) return proof;
            // Its Makefile is part of others: not built when none of those is entered either.
            var theirs = includers.Select(i =>
                (Includer: i, Proof: EnclosingDirectoryNotEntered(Path.GetDirectoryName(i) ?? "", depth + 1))).ToList();
            if (theirs.Any(t => t.Proof is null)) continue;
            return new NotBuiltProof(NotBuiltReason.DirectoryNotBuilt,
                $"{proof.Statement}; the Makefiles that include its Makefile ({string.Join(", ", includers)}) are " +
                $"not entered either",
                [.. proof.Evidence, .. theirs.Select(t => $"{t.Includer}: {t.Proof}")]);
        }
        return null;
    }

    /// <summary>The Makefiles outside <paramref name="directory"/> that may include one inside it (conservatively: an
    /// include line naming the directory).</summary>
    private IReadOnlyList<string> IncludersFromOutside(string directory)
    {
        var name = Path.GetFileName(directory) + "/";
        return [.. _allMakefiles.Value.Where(m => !m.Path.StartsWith(directory + "/", StringComparison.Ordinal)
            && m.Text.Contains(name, StringComparison.Ordinal)
            && m.Text.Split('\n').Any(l => IncludeLine().IsMatch(l) && l.Contains(name, StringComparison.Ordinal)))
            .Select(m => m.Path)];
    }

    /// <summary>Objects that Makefile rules compile from <paramref name="sourcePath"/> under another name: (directory,
    /// object path).</summary>
    private IEnumerable<(string Directory, string ObjectPath)> RuleObjects(string sourcePath) =>
        _rules.Value[sourcePath];

    private ILookup<string, (string Directory, string ObjectPath)> IndexRules() =>
        _allMakefiles.Value.SelectMany(makefile =>
        {
            var directory = Path.GetDirectoryName(makefile.Path) ?? "";
            return RuleFromSource().Matches(makefile.Text).Select(rule => (Source: rule.Groups["source"].Value,
                Rule: (directory, (directory.Length == 0 ? "" : directory + "/") + rule.Groups["object"].Value)));
        }).ToLookup(r => r.Source, r => r.Rule, StringComparer.Ordinal);

    private bool NamedBy(string script, string word)
    {
        var path = Path.Combine(_tree, script);
        var text = _scripts.GetOrAdd(path, p => File.Exists(p) ? File.ReadAllText(p) : "");
        return text.Contains(word, StringComparison.Ordinal) && WordPattern(word).IsMatch(text);
    }

    private UnitResolution WithDescent(string sourcePath, string objectPath, string listing, Placement placement)
    {
        var descent = Descent(listing);
        if (descent.Unresolved is { } reason) return new UnitResolution.Unresolved(sourcePath, reason);
        if (descent.NotBuilt is { } proof) return new UnitResolution.NotBuilt(sourcePath, proof);
        // A directory descended only for modules (obj-m += dir/) links its obj-y into nothing.
        if (descent.State == 'm' && placement.Module is null)
            return new UnitResolution.NotBuilt(sourcePath, new NotBuiltProof(NotBuiltReason.DirectoryNotBuilt,
                $"{objectPath} is in the built-in lists of {listing}/ ({placement.How}), but that directory is " +
                $"descended into only for modules, so its built-in objects are linked into nothing", []));
        var listedAs = objectPath.StartsWith(listing + "/", StringComparison.Ordinal) || listing.Length == 0
            ? null : listing + "/" + Path.GetRelativePath(listing, objectPath);
        return new UnitResolution.Built(sourcePath,
            [new TranslationUnit(sourcePath, objectPath, placement.Module ?? KernelObjectNames.Vmlinux, listedAs)]);
    }

    private sealed record DescentResult(char State, NotBuiltProof? NotBuilt, string? Unresolved);

    /// <summary>Whether kbuild descends into <paramref name="directory"/> from the top: 'y', or 'm' when only for
    /// modules.</summary>
    private DescentResult Descent(string directory)
    {
        var state = 'y';
        var current = directory;
        while (current.Length > 0 && !_makefiles.TopDirectories.Contains(current))
        {
            string? listedBy = null, nearest = null;
            // The nearest enclosing Makefile usually lists it (dir/), an outer one may (a/b/).
            foreach (var parent in Ancestors(Path.GetDirectoryName(current) ?? ""))
            {
                if (_makefiles.Lists(parent) is not { } lists) continue;
                if (lists.Error is { } error) return new(state, null, error);
                nearest ??= parent;
                var relative = Relative(current, parent);
                if (lists.Descends(current) is { } how)
                {
                    if (how == 'm') state = 'm';
                    listedBy = parent;
                    break;
                }
                if (lists.DescendsWithoutLinking(current))
                    return new(state, null, $"{_makefiles.MakefileOf(parent)} descends into {relative}/ only as a " +
                        $"subdir, for targets linked into nothing; whether its objects reach the kernel cannot be " +
                        $"told");
            }
            if (listedBy is null) return new(state, DirectoryNotBuilt(current, nearest ?? ""), null);
            current = listedBy;
        }
        return new(state, null, null);
    }

    private NotBuiltProof DirectoryNotBuilt(string directory, string parent)
    {
        var name = Relative(directory, parent) + "/";
        // The top Makefile and the architecture's name the top directories (core-y, drivers-y, libs-y).
        string[] makefiles = parent.Length == 0 ? ["Makefile", "Kbuild", "arch/x86/Makefile"]
            : [_makefiles.MakefileOf(parent)];
        var mentions = makefiles.SelectMany(m => Mentions(m, name)).ToList();
        return new NotBuiltProof(NotBuiltReason.DirectoryNotBuilt,
            $"kbuild does not descend into {directory}/: no object list of {string.Join(", ", makefiles)}, evaluated " +
            $"with this .config, holds {name}",
            [.. mentions.Concat(ConfigEvidence(mentions))]);
    }

    private UnitResolution NotListed(string sourcePath, string objectPath, IReadOnlyList<string> evaluated)
    {
        var name = Path.GetFileName(objectPath);
        var mentionLines = MentioningMakefiles(name).SelectMany(m => Mentions(m, name, objectPath)).ToList();
        // A Makefile names it but kbuild's lists do not hold it: not built only when this .config explains why.
        var unexplained = mentionLines.Where(m => !ExplainsAbsence(m)).ToList();
        if (unexplained.Count > 0 && !mentionLines.Any(HostProgram))
            return new UnitResolution.Unresolved(sourcePath,
                $"{string.Join("; ", unexplained)} names {name}, but kbuild's evaluation of " +
                $"{string.Join(", ", evaluated)} with this .config links it nowhere, and no unset option explains it");
        var statement = evaluated.Count == 0
            ? $"no Makefile encloses {sourcePath}, so kbuild makes no object of it"
            : $"no object list of {string.Join(", ", evaluated)}, evaluated by kbuild with this .config, holds " +
            $"{Path.GetFileName(objectPath)}" +
              (mentionLines.Count == 0 ? ", and no Makefile in the tree names it" : "");
        return new UnitResolution.NotBuilt(sourcePath, new NotBuiltProof(NotBuiltReason.ObjectNotListed, statement,
            [.. mentionLines.Concat(ConfigEvidence(mentionLines))]));
    }

    /// <summary>A mention is explained when it names a configuration option that is not set to y or m, or the target is
    /// a composite that is itself not built.</summary>
    private bool ExplainsAbsence(string mention) =>
        HostProgram(mention)
        || ConfigSymbol().Matches(mention).Any(m => _config.GetValueOrDefault(m.Value) is not ("y" or "m"))
        || Composite().Match(mention) is { Success: true } composite
        && !CompositeBuilt(mention, composite.Groups["name"].Value);

    private bool CompositeBuilt(string mention, string name)
    {
        var makefile = mention[..mention.IndexOf(':')];
        var directory = Path.GetDirectoryName(makefile) ?? "";
        var composite = (directory.Length == 0 ? "" : directory + "/") + name + ".o";
        return _makefiles.Lists(directory) is { Error: null } lists && lists.Place(composite) is not null
            && Descent(directory) is { NotBuilt: null, Unresolved: null };
    }

    private static bool HostProgram(string mention) => HostTarget().IsMatch(mention);

    private IEnumerable<string> ConfigEvidence(IEnumerable<string> mentions) =>
        mentions.SelectMany(m => ConfigSymbol().Matches(m).Select(s => s.Value)).Distinct(StringComparer.Ordinal)
            .Select(s => _config.TryGetValue(s, out var value) ? $"{s}={value}" : $"{s} is not set");

    private IEnumerable<string> MentioningMakefiles(string word) => _mentioning.GetOrAdd(word, w =>
        [.. _allMakefiles.Value.Where(m => m.Text.Contains(w, StringComparison.Ordinal)).Select(m => m.Path)]);

    /// <summary>The directories whose Makefiles name <paramref name="objectName"/>, directly or through a Makefile
    /// fragment they include.</summary>
    private IEnumerable<string> ListingCandidates(string objectName)
    {
        var mentioning = MentioningMakefiles(objectName).ToList();
        // Any Makefile may be included by another (virt/kvm/Makefile.kvm by arch/x86/kvm/Makefile, amdkfd/Makefile by
        // amdgpu's).
        var fragments = mentioning.Select(m =>
            Path.GetFileName(Path.GetDirectoryName(m) ?? "") + "/" + Path.GetFileName(m)).Distinct();
        return mentioning.Concat(fragments.SelectMany(MentioningMakefiles))
            .Where(m => Path.GetFileName(m) is "Makefile" or "Kbuild").Select(m => Path.GetDirectoryName(m) ?? "")
            .Distinct(StringComparer.Ordinal);
    }

    /// <summary>
    /// The logical lines (continuations joined) of a Makefile that name <paramref name="word"/>, as
    /// "path:line: text", with the conditionals around them. With <paramref name="objectPath"/>, only the
    /// lines whose word can be that object (a path relative to the Makefile's directory, or one made with a variable).
    /// </summary>
    private IEnumerable<string> Mentions(string makefile, string word, string? objectPath = null)
    {
        var lines = _makefileLines.GetOrAdd(makefile,
            m => File.Exists(Path.Combine(_tree, m)) ? File.ReadAllLines(Path.Combine(_tree, m)) : []);
        var directory = Path.GetDirectoryName(makefile) ?? "";
        var conditions = new Stack<string>();
        var pattern = _wordPatterns.GetOrAdd(word, WordPattern);
        for (var i = 0; i < lines.Length; i++)
        {
            var first = i;
            var logical = lines[i];
            while (logical.EndsWith('\\') && i + 1 < lines.Length) logical = logical[..^1] + " " + lines[++i];
            var trimmed = logical.Trim();
            if (Conditional().IsMatch(trimmed)) conditions.Push(trimmed);
            else if (trimmed.StartsWith("endif", StringComparison.Ordinal) && conditions.Count > 0) conditions.Pop();
            else if (trimmed.StartsWith("else", StringComparison.Ordinal) && conditions.Count > 0)
                conditions.Push("not (" + conditions.Pop() + ")");
            if (trimmed.StartsWith('#') || !logical.Contains(word, StringComparison.Ordinal)
                || !pattern.IsMatch(logical)) continue;
            if (objectPath is not null && !trimmed.Split([' ', '\t', '='], StringSplitOptions.RemoveEmptyEntries)
                    .Where(t => t == word || t.EndsWith("/" + word, StringComparison.Ordinal))
                    .Any(t =>
                        t.Contains('$') || Normalize(directory.Length == 0 ? t : directory + "/" + t) == objectPath))
                continue;
            var inside = conditions.Count > 0 ? $" (inside {string.Join(", ", conditions.Reverse())})" : "";
            yield return $"{makefile}:{first + 1}: {Regex.Replace(trimmed, @"\s+", " ")}{inside}";
        }
    }

    private static string Normalize(string path)
    {
        var parts = new List<string>();
        foreach (var part in path.Split('/'))
        {
            if (part is "." or "") continue;
            if (part == ".." && parts.Count > 0) parts.RemoveAt(parts.Count - 1);
            else parts.Add(part);
        }
        return string.Join('/', parts);
    }

    private static Regex WordPattern(string word) => new($@"(^|[\s/=""']){Regex.Escape(word)}(\s|$|[)""';])");

    /// <summary>The directory itself, then each enclosing one up to the tree's root ("").</summary>
    private static IEnumerable<string> Ancestors(string directory)
    {
        var current = directory;
        while (true)
        {
            yield return current;
            if (current.Length == 0) yield break;
            current = Path.GetDirectoryName(current) ?? "";
        }
    }

    private static string Relative(string path, string directory) =>
        directory.Length == 0 ? path : path[(directory.Length + 1)..];

    [GeneratedRegex(@"^\$\(obj\)/(?<object>[A-Za-z0-9_./-]+\.o)\s*:[^\n]*?\$\(srctree\)/(?<source>[A-Za-z0-9_./-]+\.c)",
        RegexOptions.Multiline)]
    private static partial Regex RuleFromSource();

    [GeneratedRegex(@"^\s*-?s?include\s")]
    private static partial Regex IncludeLine();

    [GeneratedRegex(@"CONFIG_[A-Za-z0-9_]+")]
    private static partial Regex ConfigSymbol();

    [GeneratedRegex(@"^\s*(ifeq|ifneq|ifdef|ifndef)\b")]
    private static partial Regex Conditional();

    [GeneratedRegex(@":\d+:\s*(?<name>[A-Za-z0-9_./-]+?)-(y|m|objs|\$\(CONFIG_[A-Za-z0-9_]+\))\s*[:+]?=")]
    private static partial Regex Composite();

    [GeneratedRegex(@":\d+:\s*(hostprogs|userprogs|always|extra|targets|clean-files|" +
        @"[A-Za-z0-9_-]*-userccflags|HOST|user)")]
    private static partial Regex HostTarget();
}
