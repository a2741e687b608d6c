/* The replacement for libcrypto's OpenSSL_version(): a string literal of the patch's own. */
const char *OpenSSL_version(int type)
{
    (void)type;
    return "Kintsugi-patched OpenSSL";
}
