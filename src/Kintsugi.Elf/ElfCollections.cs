using System.Collections.ObjectModel;

namespace Kintsugi.Elf;

/// <summary>
/// A list whose members belong to one owner and know their 1-based index in it (index 0 is the ELF null
/// entry): adding attaches and numbers an item, removing detaches it, and the rest are renumbered.
/// </summary>
public abstract class ElfOwnedCollection<T> : Collection<T> where T : class
{
    private protected readonly List<T> ItemList;

    private protected ElfOwnedCollection(List<T> items)
        : base(items)
    {
        ItemList = items;
    }

    /// <summary>Removes every item that matches, renumbering once; returns how many went.</summary>
    public int RemoveAll(Predicate<T> match)
    {
        ArgumentNullException.ThrowIfNull(match);
        int removed = ItemList.RemoveAll(item =>
        {
            if (!match(item))
            {
                return false;
            }

            Detach(item);
            return true;
        });
        Renumber(0);
        return removed;
    }

    private protected abstract bool HasOwner(T item);

    private protected abstract void SetOwner(T item, bool attached);

    private protected abstract void SetIndex(T item, int index);

    /// <summary>The message for an item that already belongs elsewhere.</summary>
    private protected abstract string AlreadyOwned(T item);

    protected override void InsertItem(int index, T item)
    {
        Attach(item);
        base.InsertItem(index, item);
        Renumber(index);
    }

    protected override void RemoveItem(int index)
    {
        Detach(ItemList[index]);
        base.RemoveItem(index);
        Renumber(index);
    }

    protected override void SetItem(int index, T item)
    {
        if (ReferenceEquals(ItemList[index], item))
        {
            return;
        }

        Attach(item);
        Detach(ItemList[index]);
        base.SetItem(index, item);
        SetIndex(item, index + 1);
    }

    protected override void ClearItems()
    {
        foreach (var item in ItemList)
        {
            Detach(item);
        }

        base.ClearItems();
    }

    private void Attach(T item)
    {
        ArgumentNullException.ThrowIfNull(item);
        if (HasOwner(item))
        {
            throw new InvalidOperationException(AlreadyOwned(item));
        }

        SetOwner(item, attached: true);
    }

    private void Detach(T item)
    {
        SetOwner(item, attached: false);
        SetIndex(item, 0);
    }

    private protected void Renumber(int from)
    {
        for (int i = from; i < ItemList.Count; i++)
        {
            SetIndex(ItemList[i], i + 1);
        }
    }
}

/// <summary>
/// The sections of an object in section header order (without the implicit null section 0).
/// Keeps every member's <see cref="ElfSection.Index"/> and <see cref="ElfSection.Object"/> current.
/// </summary>
public sealed class ElfSectionCollection : ElfOwnedCollection<ElfSection>
{
    private readonly ElfObject _owner;

    internal ElfSectionCollection(ElfObject owner)
        : base([])
    {
        _owner = owner;
    }

    private protected override bool HasOwner(ElfSection item) => item.Object is not null;

    private protected override void SetOwner(ElfSection item, bool attached) => item.Object = attached ? _owner : null;

    private protected override void SetIndex(ElfSection item, int index) => item.Index = index;

    private protected override string AlreadyOwned(ElfSection item) =>
        $"Section '{item.Name}' already belongs to an object; remove it there first.";
}

/// <summary>
/// The symbols of a symbol table in index order (without the null symbol 0).
/// Keeps every member's <see cref="ElfSymbol.Index"/> and <see cref="ElfSymbol.SymbolTable"/> current.
/// </summary>
public sealed class ElfSymbolCollection : ElfOwnedCollection<ElfSymbol>
{
    private readonly ElfSymbolTableSection _owner;

    internal ElfSymbolCollection(ElfSymbolTableSection owner)
        : base([])
    {
        _owner = owner;
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

        var locals = ItemList.Where(s => s.Binding == ElfSymbolBinding.Local).ToList();
        var others = ItemList.Where(s => s.Binding != ElfSymbolBinding.Local).ToList();
        ItemList.Clear();
        ItemList.AddRange(locals);
        ItemList.AddRange(others);
        Renumber(0);
    }

    internal bool NeedsLocalsFirstSort()
    {
        bool seenNonLocal = false;
        foreach (var symbol in ItemList)
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
        ItemList.Add(symbol);
        symbol.Index = ItemList.Count;
    }

    private protected override bool HasOwner(ElfSymbol item) => item.SymbolTable is not null;

    private protected override void SetOwner(ElfSymbol item, bool attached) =>
        item.SymbolTable = attached ? _owner : null;

    private protected override void SetIndex(ElfSymbol item, int index) => item.Index = index;

    private protected override string AlreadyOwned(ElfSymbol item) =>
        $"Symbol '{item.Name}' already belongs to a symbol table; remove it there first.";
}
