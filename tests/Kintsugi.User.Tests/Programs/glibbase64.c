/* Workers encoding bytes with Debian's GLib (g_base64_encode of libglib-2.0.so.0) and checking every answer against
 * an encoder of their own: encoded_right counts the right answers, encoded_wrong the wrong ones (never expected,
 * whether the shipped or a patched g_base64_encode answers). No GLib headers: the two functions are declared here. */
#include <string.h>

#include "workers.h"

char *g_base64_encode(const unsigned char *data, size_t len);
void g_free(void *memory);
long encoded_right, encoded_wrong;

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? alphabet[v & 63] : '=';
    }
    out[o] = '\0';
}

static void *worker(void *arg)
{
    unsigned char data[96];
    char expected[160];
    unsigned seed = (unsigned)(size_t)arg + 1;
    for (long i = 1;; i++) {
        size_t len = (size_t)(i % 97);
        for (size_t b = 0; b < len; b++) data[b] = (unsigned char)rand_r(&seed);
        encode(data, len, expected);
        char *got = g_base64_encode(data, len);
        if (got != NULL && strcmp(got, expected) == 0)
            __atomic_fetch_add(&encoded_right, 1, __ATOMIC_RELAXED);
        else {
            __atomic_fetch_add(&encoded_wrong, 1, __ATOMIC_RELAXED);
            fprintf(stderr, "g_base64_encode of %zu bytes: '%s', expected '%s'\n", len, got ? got : "(null)",
                    expected);
        }
        g_free(got);
        breathe(i);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    run_workers(argc, argv, worker);
}
