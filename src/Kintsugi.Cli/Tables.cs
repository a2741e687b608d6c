using Spectre.Console;
using Spectre.Console.Rendering;

namespace Kintsugi.Cli;

/// <summary>
/// The one table renderer of the command line (Spectre.Console). In a terminal a table fits its width; redirected
/// (a pipe, a file, a script) it is laid out as wide as its content, so that a row is always one line for grep and
/// awk. Cells are plain text, never markup: server data such as a hostname is printed as it is.
/// </summary>
public static class Tables
{
    public static Table Create(params string[] columns) => new Table().AddColumns(columns);

    public static Table Row(this Table table, params string[] cells) =>
        table.AddRow([.. cells.Select(c => (IRenderable)new Text(c))]);

    public static void Write(IRenderable table)
    {
        if (!Console.IsOutputRedirected)
        {
            AnsiConsole.Write(table);
            return;
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Out = new AnsiConsoleOutput(Console.Out),
        });
        console.Profile.Width = 4096;
        console.Write(table);
    }
}
