namespace Kintsugi.Elf;

/// <summary>ELF64_R_TYPE for x86-64 (psABI). Values not named here are kept as they are.</summary>
public enum X86RelocationType : uint
{
    None = 0,
    R64 = 1,
    PC32 = 2,
    Got32 = 3,
    Plt32 = 4,
    Copy = 5,
    GlobDat = 6,
    JumpSlot = 7,
    Relative = 8,
    GotPcRel = 9,
    R32 = 10,
    R32S = 11,
    R16 = 12,
    PC16 = 13,
    R8 = 14,
    PC8 = 15,
    DtpMod64 = 16,
    DtpOff64 = 17,
    TpOff64 = 18,
    TlsGd = 19,
    TlsLd = 20,
    DtpOff32 = 21,
    GotTpOff = 22,
    TpOff32 = 23,
    PC64 = 24,
    GotOff64 = 25,
    GotPC32 = 26,
    Got64 = 27,
    GotPcRel64 = 28,
    GotPC64 = 29,
    GotPlt64 = 30,
    PltOff64 = 31,
    Size32 = 32,
    Size64 = 33,
    GotPC32TlsDesc = 34,
    TlsDescCall = 35,
    TlsDesc = 36,
    IRelative = 37,
    Relative64 = 38,
    GotPcRelX = 41,
    RexGotPcRelX = 42,
    Code4GotPcRelX = 43,
    Code4GotTpOff = 44,
    Code4GotPC32TlsDesc = 45,
}

/// <summary>
/// What the psABI says about a relocation type's field, for everyone who reads or masks relocated bytes.
/// </summary>
public static class X86RelocationTypes
{
    /// <summary>
    /// The width in bytes of the field a relocation of this type writes (4 for the 32-bit kinds and any unknown).
    /// </summary>
    public static int FieldWidth(this X86RelocationType type) => type switch
    {
        X86RelocationType.R64 or X86RelocationType.PC64 or X86RelocationType.GotOff64 or X86RelocationType.Size64 => 8,
        X86RelocationType.R16 or X86RelocationType.PC16 => 2,
        X86RelocationType.R8 or X86RelocationType.PC8 => 1,
        X86RelocationType.None => 0,
        _ => 4,
    };

    /// <summary>Whether the field holds a displacement from the place it is written to.</summary>
    public static bool IsPcRelative(this X86RelocationType type) =>
        type is X86RelocationType.PC32 or X86RelocationType.Plt32 or X86RelocationType.PC64 or X86RelocationType.PC16
            or X86RelocationType.PC8;
}
