using System.Collections.ObjectModel;

namespace Kintsugi.Elf;

/// <summary>
/// The sections of an object in section header order (without the implicit null section 0).
/// Keeps every member's <see cref="ElfSection.Index"/> and <see cref="ElfSection.Object"/> current.
/// </summary>
public sealed class ElfSectionCollection : Collection<ElfSection>
{
    private readonly ElfObject _owner;
    private readonly List<ElfSection> _items;

    internal ElfSectionCollection(ElfObject owner)
        : this(owner, [])
    {
    }

    private ElfSectionCollection(ElfObject owner, List<ElfSection> items)
        : base(items)
    {
        _owner = owner;
        _items = items;
    }

    /// <summary>Removes every section that matches, renumbering once; returns how many went.</summary>
    public int RemoveAll(Predicate<ElfSection> match)
    {
        ArgumentNullException.ThrowIfNull(match);
        int removed = _items.RemoveAll(section =>
        {
            if (!match(section))
            {
                return false;
            }

            Detach(section);
            return true;
        });
        Renumber(0);
        return removed;
    }

    protected override void InsertItem(int index, ElfSection item)
    {
        Attach(item);
        base.InsertItem(index, item);
        Renumber(index);
    }

    protected override void RemoveItem(int index)
    {
        Detach(_items[index]);
        base.RemoveItem(index);
        Renumber(index);
    }

    protected override void SetItem(int index, ElfSection item)
    {
        if (ReferenceEquals(_items[index], item))
        {
            return;
        }

        Attach(item);
        Detach(_items[index]);
        base.SetItem(index, item);
        item.Index = index + 1;
    }

    protected override void ClearItems()
    {
        foreach (var section in _items)
        {
            Detach(section);
        }

        base.ClearItems();
    }

    private void Attach(ElfSection section)
    {
        ArgumentNullException.ThrowIfNull(section);
        if (section.Object is not null)
        {
            throw new InvalidOperationException($"Section '{section.Name}' already belongs to an object; remove it there first.");
        }

        section.Object = _owner;
    }

    private static void Detach(ElfSection section)
    {
        section.Object = null;
        section.Index = 0;
    }

    private void Renumber(int from)
    {
        for (int i = from; i < _items.Count; i++)
        {
            _items[i].Index = i + 1;
        }
    }
}

/// <summary>
/// The symbols of a symbol table in index order (without the null symbol 0).
/// Keeps every member's <see cref="ElfSymbol.Index"/> and <see cref="ElfSymbol.SymbolTable"/> current.
/// </summary>
public sealed class ElfSymbolCollection : Collection<ElfSymbol>
{
    private readonly ElfSymbolTableSection _owner;
    private readonly List<ElfSymbol> _items;

    internal ElfSymbolCollection(ElfSymbolTableSection owner)
        : this(owner, [])
    {
    }

    private ElfSymbolCollection(ElfSymbolTableSection owner, List<ElfSymbol> items)
        : base(items)
    {
        _owner = owner;
        _items = items;
    }

    /// <summary>Removes every symbol that matches, renumbering once; returns how many went.</summary>
    public int RemoveAll(Predicate<ElfSymbol> match)
    {
        ArgumentNullException.ThrowIfNull(match);
        int removed = _items.RemoveAll(symbol =>
        {
            if (!match(symbol))
            {
                return false;
            }

            Detach(symbol);
            return true;
        });
        Renumber(0);
        return removed;
    }

    /// <summary>
    /// Moves local symbols before all others, keeping the relative order within each group,
    /// as the ELF specification requires (sh_info is the index of the first non-local symbol).
    /// </summary>
    public void SortLocalsFirst()
    {
        if (!NeedsLocalsFirstSort())
        {
            return;
        }

        var locals = _items.Where(s => s.Binding == ElfSymbolBinding.Local).ToList();
        var others = _items.Where(s => s.Binding != ElfSymbolBinding.Local).ToList();
        _items.Clear();
        _items.AddRange(locals);
        _items.AddRange(others);
        Renumber(0);
    }

    internal bool NeedsLocalsFirstSort()
    {
        bool seenNonLocal = false;
        foreach (var symbol in _items)
        {
            if (symbol.Binding != ElfSymbolBinding.Local)
            {
                seenNonLocal = true;
            }
            else if (seenNonLocal)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Adds symbols read from a file without per-item overhead.</summary>
    internal void AddRead(ElfSymbol symbol)
    {
        symbol.SymbolTable = _owner;
        _items.Add(symbol);
        symbol.Index = _items.Count;
    }

    protected override void InsertItem(int index, ElfSymbol item)
    {
        Attach(item);
        base.InsertItem(index, item);
        Renumber(index);
    }

    protected override void RemoveItem(int index)
    {
        Detach(_items[index]);
        base.RemoveItem(index);
        Renumber(index);
    }

    protected override void SetItem(int index, ElfSymbol item)
    {
        if (ReferenceEquals(_items[index], item))
        {
            return;
        }

        Attach(item);
        Detach(_items[index]);
        base.SetItem(index, item);
        item.Index = index + 1;
    }

    protected override void ClearItems()
    {
        foreach (var symbol in _items)
        {
            Detach(symbol);
        }

        base.ClearItems();
    }

    private void Attach(ElfSymbol symbol)
    {
        ArgumentNullException.ThrowIfNull(symbol);
        if (symbol.SymbolTable is not null)
        {
            throw new InvalidOperationException($"Symbol '{symbol.Name}' already belongs to a symbol table; remove it there first.");
        }

        symbol.SymbolTable = _owner;
    }

    private static void Detach(ElfSymbol symbol)
    {
        symbol.SymbolTable = null;
        symbol.Index = 0;
    }

    private void Renumber(int from)
    {
        for (int i = from; i < _items.Count; i++)
        {
            _items[i].Index = i + 1;
        }
    }
}
