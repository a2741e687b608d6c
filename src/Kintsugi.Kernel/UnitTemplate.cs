using System.Reflection;

namespace Kintsugi.Kernel;

/// <summary>
/// The systemd units are kept as files in packaging/systemd (the Debian packages ship them) and embedded
/// here, so <c>kernel install</c> and <c>agent install</c> write the very same text with this machine's paths.
/// </summary>
public static class UnitTemplate
{
    /// <summary>The words of a command line made by <see cref="SystemdUnit.CurrentCommand"/>: the program, and the
    /// assembly when it runs under dotnet.</summary>
    public static IReadOnlyList<string> Words(string command)
    {
        var space = command.IndexOf(' ', StringComparison.Ordinal);
        return space > 0 && Path.GetFileName(command[..space]) == "dotnet" ? [command[..space], command[(space + 1)..]]
            : [command];
    }

    /// <summary>The unit with <c>"@KINTSUGI@"</c> replaced by the quoted command words and each other placeholder by
    /// its value.</summary>
    public static string Render(Assembly assembly, string name, IReadOnlyList<string> command,
        IReadOnlyDictionary<string, string> values)
    {
        using var stream = assembly.GetManifestResourceStream(name) ?? throw new InvalidOperationException($"the " +
            $"unit template {name} is not embedded in {assembly.GetName().Name}");
        var text = new StreamReader(stream).ReadToEnd();
        // The leading comment says how the template is filled; the written unit starts at [Unit].
        text = text[text.IndexOf("[Unit]", StringComparison.Ordinal)..];
        text = text.Replace("\"@KINTSUGI@\"", string.Join(' ', command.Select(Quote)));
        foreach (var (key, value) in values) text = text.Replace(key, value.Contains('"')
            ? throw new ArgumentException($"{value}: a path with a double quote cannot go into a unit") : value);
        return text;
    }

    /// <summary>Writes the unit <paramref name="name"/> and enables it; returns its path.</summary>
    public static string Install(MachinePaths paths, string name, string text)
    {
        var unitPath = Path.Combine(paths.SystemdUnits, name);
        AtomicFile.WriteText(unitPath, text);
        Enable(paths, name, unitPath);
        return unitPath;
    }

    /// <summary>The enablement symlink <c>systemctl enable</c> makes, for machines where systemd is not
    /// running.</summary>
    public static void Enable(MachinePaths paths, string name, string unitPath)
    {
        var wants = Path.Combine(paths.SystemdUnits, WantedBy);
        Directory.CreateDirectory(wants);
        var link = Path.Combine(wants, name);
        if (!File.Exists(link) && new FileInfo(link).LinkTarget is null) File.CreateSymbolicLink(link, unitPath);
    }

    /// <summary>Removes the unit and its enablement symlink.</summary>
    public static void Uninstall(MachinePaths paths, string name)
    {
        File.Delete(Path.Combine(paths.SystemdUnits, WantedBy, name));
        File.Delete(Path.Combine(paths.SystemdUnits, name));
    }

    /// <summary>Both units are wanted by the normal boot target.</summary>
    private const string WantedBy = "multi-user.target.wants";

    /// <summary>systemd's quoting: double quotes around a word, so a path with spaces stays one argument.</summary>
    public static string Quote(string word) =>
        word.Contains('"') || word.Contains('\\') ? throw new ArgumentException($"{word}: a path with a quote or " +
        $"backslash cannot go into a unit") : $"\"{word}\"";
}
