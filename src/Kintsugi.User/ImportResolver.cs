namespace Kintsugi.User;

/// <summary>
/// Finds a dynamic symbol the way the dynamic linker would for a new reference: the first object, in load
/// order, that defines it with its default version. Objects are read from the process's own view of the file
/// (<c>/proc/PID/map_files</c>), which is the file the process mapped even if it was replaced or deleted since.
/// </summary>
internal sealed class ImportResolver(int pid, ProcessMaps maps, IReadOnlyList<LoadedObject> objects)
{
    private readonly Dictionary<(string, ulong), IReadOnlyList<ElfImageSymbol>> _symbols = [];

    public ulong Resolve(string name)
    {
        foreach (var loaded in objects)
        {
            var key = (loaded.Device, loaded.Inode);
            if (!_symbols.TryGetValue(key, out var symbols))
                _symbols[key] = symbols = ElfImage.Load($"/proc/{pid}/map_files/{loaded.Start:x}-" +
                    $"{FirstMappingEnd(loaded):x}").Symbols(dynamic: true);
            foreach (var symbol in symbols)
            {
                if (symbol.Name != name || !symbol.Defined || symbol.HiddenVersion
                    || symbol.Binding == ElfImageSymbol.BindingLocal) continue;
                if (symbol.Type == ElfImageSymbol.TypeIndirectFunction)
                    throw new UserPatchException($"the patch calls {name}, an IFUNC of {loaded.FileName} that is not " +
                        $"in the target's GOT; " +
                        "rebuild the patch so that it calls it through the target's own PLT");
                if (symbol.Type == ElfImageSymbol.TypeTls)
                    throw new UserPatchException($"the patch refers to the thread-local {name} of {loaded.FileName}, " +
                        $"which a patch cannot bind to");
                return loaded.LoadBase + symbol.Value;
            }
        }
        throw new UserPatchException($"no object loaded in process {pid} defines {name}, which the patch needs",
            ExitCode.InputRefused);
    }

    private ulong FirstMappingEnd(LoadedObject loaded) => maps.Mappings.First(m => m.Start == loaded.Start).End;
}
