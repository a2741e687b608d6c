using System.Buffers.Binary;

namespace Kintsugi.User;

/// <summary>
/// Unwinds a stopped thread's stack with the call frame information the compiler emitted into each loaded
/// object's <c>.eh_frame</c> (found through <c>PT_GNU_EH_FRAME</c>, read from the process's memory), without
/// frame pointers. Returns the return address of every frame, or null whenever anything is not understood (code
/// without unwind information such as JIT output or a patch, a signal frame, a CFA given by a DWARF expression,
/// an unreadable stack, too many frames): the caller then falls back to the conservative scan, so an unwind
/// problem can never read as "safe".
/// </summary>
internal sealed class StackUnwinder(ProcessMaps maps, ProcessMemory memory)
{
    private const int MaxFrames = 512;
    private const int RegisterCount = 17;     // DWARF x86-64: 0..15 general registers, 16 the return address
    private const int Rbx = 3, Rbp = 6, Rsp = 7, ReturnAddress = 16;
    private const uint GnuEhFrame = 0x6474e550;
    private readonly Dictionary<ulong, UnwindObject?> _objects = [];

    /// <summary>The return addresses of the thread's frames, innermost first, or null when the unwind is not
    /// certain.</summary>
    public IReadOnlyList<ulong>? ReturnAddresses(in UserRegisters registers)
    {
        var values = new ulong?[RegisterCount];
        values[0] = registers.Rax; values[1] = registers.Rdx; values[2] = registers.Rcx; values[Rbx] = registers.Rbx;
        values[4] = registers.Rsi; values[5] = registers.Rdi; values[Rbp] = registers.Rbp; values[Rsp] = registers.Rsp;
        values[8] = registers.R8; values[9] = registers.R9; values[10] = registers.R10; values[11] = registers.R11;
        values[12] = registers.R12; values[13] = registers.R13; values[14] = registers.R14; values[15] = registers.R15;
        var pc = registers.Rip;
        var returns = new List<ulong>();
        for (var frame = 0; frame < MaxFrames; frame++)
        {
            // A return address points after its call: look up the call itself, which may be a function's last
            // instruction.
            var lookup = frame == 0 ? pc : pc - 1;
            var rules = RulesAt(lookup);
            if (rules is null) return null;
            if (rules.CfaRegister is not (>= 0 and < RegisterCount) || values[rules.CfaRegister] is not { } cfaBase)
                return null;
            var cfa = (ulong)((long)cfaBase + rules.CfaOffset);
            var next = new ulong?[RegisterCount];
            for (var r = 0; r < RegisterCount; r++)
            {
                var rule = rules.Registers[r];
                next[r] = rule.Kind switch
                {
                    RuleKind.SameValue => values[r],
                    RuleKind.Offset => ReadWord((ulong)((long)cfa + rule.Value)),
                    RuleKind.ValueOffset => (ulong)((long)cfa + rule.Value),
                    RuleKind.Register => rule.Value is >= 0 and < RegisterCount ? values[rule.Value] : null,
                    _ => null,
                };
                // Only callee-saved registers survive a call; the others are unknown in the caller.
                if (rule.Kind == RuleKind.SameValue && r is not (Rbx or Rbp or 12 or 13 or 14 or 15)) next[r] = null;
            }
            if (rules.Registers[ReturnAddress].Kind == RuleKind.Undefined) return returns; // the outermost frame
            if (next[ReturnAddress] is not { } returnAddress) return null;
            if (returnAddress == 0) return returns;
            next[Rsp] = cfa;
            returns.Add(returnAddress);
            values = next;
            pc = returnAddress;
        }
        return null;
    }

    private ulong? ReadWord(ulong address) =>
        ReadBytes(address, 8) is { } word ? BinaryPrimitives.ReadUInt64LittleEndian(word) : null;

    private readonly Dictionary<ulong, byte[]?> _pages = [];

    /// <summary>Reads through a cache of whole pages: the process is stopped, and unwinding reads a byte at a
    /// time.</summary>
    private byte[]? ReadBytes(ulong address, int length)
    {
        var bytes = new byte[length];
        for (var done = 0; done < length;)
        {
            var at = address + (ulong)done;
            var page = at & ~0xfffUL;
            if (!_pages.TryGetValue(page, out var content))
            {
                var buffer = new byte[4096];
                _pages[page] = content = memory.TryRead(page, buffer) == buffer.Length ? buffer : null;
            }
            if (content is null) return null;
            var offset = (int)(at - page);
            var count = Math.Min(length - done, 4096 - offset);
            content.AsSpan(offset, count).CopyTo(bytes.AsSpan(done));
            done += count;
        }
        return bytes;
    }

    // ---- finding the FDE -------------------------------------------------------------------------------

    private sealed record
        UnwindObject(ulong Start, ulong End, ulong HeaderAddress, byte TableEncoding, ulong TableAddress, ulong Count);

    private UnwindObject? ObjectAt(ulong pc)
    {
        var mapping = maps.Find(pc);
        if (mapping is null || !mapping.Executable) return null;
        var first = mapping.IsFile
            ? maps.Mappings.FirstOrDefault(m => m.Device == mapping.Device && m.Inode == mapping.Inode && m.Offset == 0)
            : mapping.Path == "[vdso]" ? mapping : null;
        if (first is null) return null;
        if (_objects.TryGetValue(first.Start, out var known)) return known;
        var parts = mapping.IsFile
            ? maps.Mappings.Where(m => m.Device == mapping.Device && m.Inode == mapping.Inode).ToList() : [mapping];
        return _objects[first.Start] = ReadObject(first.Start, parts.Min(p => p.Start), parts.Max(p => p.End));
    }

    private UnwindObject? ReadObject(ulong elf, ulong start, ulong end)
    {
        var header = ReadBytes(elf, 64);
        if (header is null || header[0] != 0x7f || header[1] != (byte)'E' || header[4] != 2) return null;
        var phoff = BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(32));
        var phnum = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(56));
        var phdrs = phnum is > 0 and <= 64 ? ReadBytes(elf + phoff, phnum * 56) : null;
        if (phdrs is null) return null;
        ulong? firstLoad = null, ehFrameHeader = null;
        for (var i = 0; i < phnum; i++)
        {
            var p = phdrs.AsSpan(i * 56, 56);
            var type = BinaryPrimitives.ReadUInt32LittleEndian(p);
            var vaddr = BinaryPrimitives.ReadUInt64LittleEndian(p[16..]);
            if (type == ElfSegment.Load && firstLoad is null) firstLoad = vaddr & ~0xfffUL;
            if (type == GnuEhFrame) ehFrameHeader = vaddr;
        }
        if (firstLoad is null || ehFrameHeader is null) return null;
        var hdr = elf - firstLoad.Value + ehFrameHeader.Value;
        var fixedPart = ReadBytes(hdr, 4);
        if (fixedPart is null || fixedPart[0] != 1 || fixedPart[3] == 0xff) return null;
        var reader = new Reader(this, hdr + 4, hdr);
        if (reader.Pointer(fixedPart[1]) is null) return null;          // eh_frame_ptr
        if (reader.Pointer(fixedPart[2]) is not { } count) return null; // fde_count
        return new UnwindObject(start, end, hdr, fixedPart[3], reader.Position, count);
    }

    /// <summary>The FDE covering pc: a binary search of the sorted table in .eh_frame_hdr.</summary>
    private ulong? FdeFor(UnwindObject o, ulong pc, out ulong functionStart)
    {
        functionStart = 0;
        var entry = EncodedSize(o.TableEncoding);
        if (entry == 0 || o.Count == 0) return null;
        long low = 0, high = (long)o.Count - 1;
        ulong? found = null;
        while (low <= high)
        {
            var middle = (low + high) / 2;
            var reader = new Reader(this, o.TableAddress + (ulong)middle * (ulong)(2 * entry), o.HeaderAddress);
            if (reader.Pointer(o.TableEncoding) is not { } start) return null;
            if (start <= pc) { found = (ulong)middle; low = middle + 1; }
            else high = middle - 1;
        }
        if (found is null) return null;
        var at = new Reader(this, o.TableAddress + found.Value * (ulong)(2 * entry), o.HeaderAddress);
        functionStart = at.Pointer(o.TableEncoding) ?? 0;
        return at.Pointer(o.TableEncoding);
    }

    private static int EncodedSize(byte encoding) =>
        (encoding & 0x0f) switch { 0x02 or 0x0a => 2, 0x03 or 0x0b => 4, 0x04 or 0x0c or 0x00 => 8, _ => 0 };

    // ---- CIE, FDE and the CFA program ------------------------------------------------------------------

    private enum RuleKind { SameValue, Undefined, Offset, ValueOffset, Register, Unknown }

    private readonly record struct Rule(RuleKind Kind, long Value);

    private sealed class Rules
    {
        public int CfaRegister = -1;
        public long CfaOffset;
        public Rule[] Registers = new Rule[RegisterCount];

        public Rules Copy() =>
            new() { CfaRegister = CfaRegister, CfaOffset = CfaOffset, Registers = (Rule[])Registers.Clone() };
    }

    private Rules? RulesAt(ulong pc)
    {
        var o = ObjectAt(pc);
        if (o is null || FdeFor(o, pc, out _) is not { } fde) return null;
        var fdeHeader = ReadBytes(fde, 8);
        if (fdeHeader is null) return null;
        var length = BinaryPrimitives.ReadUInt32LittleEndian(fdeHeader);
        var ciePointer = BinaryPrimitives.ReadUInt32LittleEndian(fdeHeader.AsSpan(4));
        if (length is 0 or 0xffffffff || ciePointer == 0) return null;
        var cie = fde + 4 - ciePointer;
        var c = ReadCie(cie);
        if (c is null || c.SignalFrame) return null;
        var fdeEnd = fde + 4 + length;
        var reader = new Reader(this, fde + 8, 0);
        if (reader.Pointer(c.FdeEncoding) is not { } begin) return null;
        if (reader.Pointer((byte)(c.FdeEncoding & 0x0f)) is not { } range) return null;
        if (pc < begin || pc >= begin + range) return null;
        if (c.Augmented)
        {
            if (reader.Uleb() is not { } skip) return null;
            reader.Position += skip;
        }
        var initial = new Rules();
        for (var r = 0; r < RegisterCount; r++) initial.Registers[r] = new Rule(RuleKind.SameValue, 0);
        if (!Execute(c, c.Instructions, c.InstructionsEnd, ulong.MaxValue, 0, initial, null)) return null;
        var rules = initial.Copy();
        return Execute(c, reader.Position, fdeEnd, pc, begin, rules, initial) ? rules : null;
    }

    private sealed record Cie(ulong CodeAlignment, long DataAlignment, ulong ReturnRegister, byte FdeEncoding,
        bool Augmented, bool SignalFrame,
        ulong Instructions, ulong InstructionsEnd);

    private readonly Dictionary<ulong, Cie?> _cies = [];

    private Cie? ReadCie(ulong address)
    {
        if (_cies.TryGetValue(address, out var known)) return known;
        return _cies[address] = ParseCie(address);
    }

    private Cie? ParseCie(ulong address)
    {
        var head = ReadBytes(address, 9);
        if (head is null) return null;
        var length = BinaryPrimitives.ReadUInt32LittleEndian(head);
        if (length is 0 or 0xffffffff || BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(4)) != 0) return null;
        var version = head[8];
        var reader = new Reader(this, address + 9, 0);
        var augmentation = reader.CString();
        if (augmentation is null || augmentation.Contains("eh")) return null;
        var codeAlignment = reader.Uleb();
        var dataAlignment = reader.Sleb();
        var returnRegister = version == 1 ? reader.Byte() : reader.Uleb();
        if (codeAlignment is null || dataAlignment is null || returnRegister != ReturnAddress) return null;
        byte fdeEncoding = 0;
        var augmented = augmentation.StartsWith('z');
        var signal = false;
        if (augmented)
        {
            if (reader.Uleb() is null) return null;
            foreach (var letter in augmentation[1..])
            {
                switch (letter)
                {
                    case 'R': fdeEncoding = reader.Byte() is { } e ? (byte)e : (byte)0xff; break;
                    case 'L': reader.Byte(); break;
                    case 'P':
                        if (reader.Byte() is not { } personality || reader.Pointer((byte)personality) is null)
                            return null;
                        break;
                    case 'S': signal = true; break;
                    case 'B': break;
                    default: return null;
                }
            }
        }
        if (fdeEncoding == 0xff) return null;
        return new Cie(codeAlignment.Value, dataAlignment.Value, returnRegister.Value, fdeEncoding, augmented, signal,
            reader.Position, address + 4 + length);
    }

    /// <summary>Runs a CFA program from <paramref name="location"/> until the row covering <paramref
    /// name="pc"/>.</summary>
    private bool Execute(Cie c, ulong start, ulong end, ulong pc, ulong location, Rules rules, Rules? initial)
    {
        var reader = new Reader(this, start, 0);
        var saved = new Stack<Rules>();
        void Set(ulong register, RuleKind kind,
            long value)
        { if (register < RegisterCount) rules.Registers[register] = new Rule(kind, value); }
        while (reader.Position < end)
        {
            if (reader.Byte() is not { } op) return false;
            var high = op & 0xc0;
            var low = (ulong)(op & 0x3f);
            if (high == 0x40)
            {
                location += low * c.CodeAlignment;
                if (location > pc) return true;
                continue;
            }
            if (high == 0x80)
            {
                if (reader.Uleb() is not { } offset) return false;
                Set(low, RuleKind.Offset, (long)offset * c.DataAlignment);
                continue;
            }
            if (high == 0xc0)
            {
                if (initial is null) return false;
                if (low < RegisterCount) rules.Registers[low] = initial.Registers[low];
                continue;
            }
            ulong? a, b;
            long? s;
            switch (op)
            {
                case 0x00: break;
                case 0x01:
                    if (reader.Pointer(c.FdeEncoding) is not { } newLocation) return false;
                    location = newLocation;
                    if (location > pc) return true;
                    break;
                case 0x02 or 0x03 or 0x04:
                    var delta = op == 0x02 ? reader.Byte() : op == 0x03 ? reader.Fixed(2) : reader.Fixed(4);
                    if (delta is null) return false;
                    location += delta.Value * c.CodeAlignment;
                    if (location > pc) return true;
                    break;
                case 0x05:
                    a = reader.Uleb(); b = reader.Uleb();
                    if (a is null || b is null) return false;
                    Set(a.Value, RuleKind.Offset, (long)b.Value * c.DataAlignment);
                    break;
                case 0x06:
                    if (reader.Uleb() is not { } restored || initial is null) return false;
                    if (restored < RegisterCount) rules.Registers[restored] = initial.Registers[restored];
                    break;
                case 0x07: if ((a = reader.Uleb()) is null) return false; Set(a.Value, RuleKind.Undefined, 0); break;
                case 0x08: if ((a = reader.Uleb()) is null) return false; Set(a.Value, RuleKind.SameValue, 0); break;
                case 0x09:
                    a = reader.Uleb(); b = reader.Uleb();
                    if (a is null || b is null) return false;
                    Set(a.Value, RuleKind.Register, (long)b.Value);
                    break;
                case 0x0a: saved.Push(rules.Copy()); break;
                case 0x0b:
                    if (saved.Count == 0) return false;
                    var state = saved.Pop();
                    rules.CfaRegister = state.CfaRegister; rules.CfaOffset = state.CfaOffset; rules.Registers =
                        state.Registers;
                    break;
                case 0x0c:
                    a = reader.Uleb(); b = reader.Uleb();
                    if (a is null || b is null) return false;
                    rules.CfaRegister = (int)a.Value; rules.CfaOffset = (long)b.Value;
                    break;
                case 0x0d: if ((a = reader.Uleb()) is null) return false; rules.CfaRegister = (int)a.Value; break;
                case 0x0e: if ((a = reader.Uleb()) is null) return false; rules.CfaOffset = (long)a.Value; break;
                // CFA by expression: not followed
                case 0x0f: rules.CfaRegister = -1; if (!SkipBlock(reader)) return false; break;
                case 0x10 or 0x16:
                    if ((a = reader.Uleb()) is null || !SkipBlock(reader)) return false;
                    Set(a.Value, RuleKind.Unknown, 0);
                    break;
                case 0x11:
                    a = reader.Uleb(); s = reader.Sleb();
                    if (a is null || s is null) return false;
                    Set(a.Value, RuleKind.Offset, s.Value * c.DataAlignment);
                    break;
                case 0x12:
                    a = reader.Uleb(); s = reader.Sleb();
                    if (a is null || s is null) return false;
                    rules.CfaRegister = (int)a.Value; rules.CfaOffset = s.Value * c.DataAlignment;
                    break;
                case 0x13:
                    if ((s = reader.Sleb()) is null) return false; rules.CfaOffset =
                    s.Value * c.DataAlignment; break;
                case 0x14:
                    a = reader.Uleb(); b = reader.Uleb();
                    if (a is null || b is null) return false;
                    Set(a.Value, RuleKind.ValueOffset, (long)b.Value * c.DataAlignment);
                    break;
                case 0x15:
                    a = reader.Uleb(); s = reader.Sleb();
                    if (a is null || s is null) return false;
                    Set(a.Value, RuleKind.ValueOffset, s.Value * c.DataAlignment);
                    break;
                case 0x2e: if (reader.Uleb() is null) return false; break;               // GNU_args_size
                case 0x2f:
                    a = reader.Uleb(); b = reader.Uleb();
                    if (a is null || b is null) return false;
                    Set(a.Value, RuleKind.Offset, -(long)b.Value * c.DataAlignment);
                    break;
                default: return false;
            }
        }
        return true;
    }

    private static bool SkipBlock(Reader reader)
    {
        if (reader.Uleb() is not { } length) return false;
        reader.Position += length;
        return true;
    }

    /// <summary>Reads DWARF-encoded values from the process.</summary>
    private sealed class Reader(StackUnwinder owner, ulong position, ulong dataBase)
    {
        public ulong Position = position;

        public ulong? Byte()
        {
            var b = owner.ReadBytes(Position, 1);
            if (b is null) return null;
            Position++;
            return b[0];
        }

        public ulong? Fixed(int size)
        {
            var bytes = owner.ReadBytes(Position, size);
            if (bytes is null) return null;
            Position += (ulong)size;
            return size switch
            {
                2 => BinaryPrimitives.ReadUInt16LittleEndian(bytes),
                4 =>
                BinaryPrimitives.ReadUInt32LittleEndian(bytes),
                _ => BinaryPrimitives.ReadUInt64LittleEndian(bytes)
            };
        }

        public ulong? Uleb()
        {
            ulong result = 0;
            for (var shift = 0; shift < 64; shift += 7)
            {
                if (Byte() is not { } b) return null;
                result |= (b & 0x7f) << shift;
                if ((b & 0x80) == 0) return result;
            }
            return null;
        }

        public long? Sleb()
        {
            long result = 0;
            for (var shift = 0; shift < 64; shift += 7)
            {
                if (Byte() is not { } b) return null;
                result |= (long)(b & 0x7f) << shift;
                if ((b & 0x80) == 0)
                {
                    if (shift + 7 < 64 && (b & 0x40) != 0) result |= -1L << (shift + 7);
                    return result;
                }
            }
            return null;
        }

        public string? CString()
        {
            var text = new System.Text.StringBuilder();
            for (var i = 0; i < 16; i++)
            {
                if (Byte() is not { } b) return null;
                if (b == 0) return text.ToString();
                text.Append((char)b);
            }
            return null;
        }

        /// <summary>A pointer in a DW_EH_PE encoding: absolute, pc-relative or data-relative (.eh_frame_hdr).</summary>
        public ulong? Pointer(byte encoding)
        {
            if (encoding == 0xff) return null;
            var at = Position;
            ulong? raw = (encoding & 0x0f) switch
            {
                0x00 => Fixed(8),
                0x01 => Uleb(),
                0x02 => Fixed(2),
                0x03 => Fixed(4),
                0x04 => Fixed(8),
                0x09 => Sleb() is { } v ? (ulong)v : null,
                0x0a => Fixed(2) is { } v2 ? (ulong)(long)(short)v2 : null,
                0x0b => Fixed(4) is { } v4 ? (ulong)(long)(int)v4 : null,
                0x0c => Fixed(8),
                _ => null,
            };
            if (raw is null) return null;
            return (encoding & 0x70) switch
            {
                0x00 => raw,
                0x10 => at + raw.Value,
                0x30 => dataBase + raw.Value,
                _ => null,
            };
        }
    }
}
