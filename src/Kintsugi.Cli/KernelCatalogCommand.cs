using System.CommandLine;
using Kintsugi.Kernel.Archive;
using Spectre.Console;

namespace Kintsugi.Cli;

/// <summary>kintsugi kernel list-available: the kernels the Debian archives offer, per release.</summary>
internal static class KernelCatalogCommand
{
    public static Command Create()
    {
        var releases = new Option<string[]>("--release")
        {
            Description = "A Debian release: 11, 12, 13 or bullseye, bookworm, trixie (repeatable; default: all)",
            AllowMultipleArgumentsPerToken = false
        };
        var flavour = new Option<string>("--flavour")
        { Description = "The kernel flavour (the release's suffix)", DefaultValueFactory = _ => "cloud-amd64" };
        var buildable = new Option<bool>("--buildable")
        { Description = "Only kernels whose headers and linux-source of the same version are in the archive" };
        var refresh = new Option<bool>("--refresh") { Description = "Update the package lists first, however recent" };
        var json = Cli.Json();
        var command = new Command("list-available",
            "List the kernels the archives of Debian 11, 12 and 13 offer (suites, updates and security), and which " +
            "of them livepatches can be built for")
            { releases, flavour, buildable, refresh, json };
        command.Action = Cli.Run(async parse =>
        {
            var chosen = parse.GetValue(releases) is { Length: > 0 } names
                ? names.Select(DebianRelease.Parse).Distinct().ToList() : DebianRelease.All;
            var archive = new DebianKernelArchive(DebianKernelArchive.DefaultCacheRoot, Cli.Progress);
            var kernels = await new KernelCatalog(archive, Cli.Progress)
                .ListAsync(chosen, parse.GetValue(flavour)!, parse.GetValue(refresh));
            if (parse.GetValue(buildable)) kernels = [.. kernels.Where(k => k.Buildable)];
            if (parse.GetValue(json))
            {
                Cli.WriteJson(kernels,
                CliJson.Default.IReadOnlyListAvailableKernel); return 0;
            }
            if (kernels.Count
                == 0) { Console.WriteLine("no kernels of that flavour in the chosen archives"); return 0; }
            var table = new Table().AddColumns("debian", "release", "package version", "suite", "headers", "source");
            foreach (var k in kernels)
                table.AddRow($"{k.Debian} ({k.Codename})", Markup.Escape(k.Release.Value),
                    Markup.Escape(k.PackageVersion), k.Suite, Yes(k.Headers), Yes(k.Source));
            Tables.Write(table);
            Console.WriteLine($"{kernels.Count} kernel(s), {kernels.Count(k => k.Buildable)} with headers and source " +
                "(livepatches can be built for them)");
            return 0;
        });
        return command;
    }

    private static string Yes(bool value) => value ? "yes" : "no";
}
