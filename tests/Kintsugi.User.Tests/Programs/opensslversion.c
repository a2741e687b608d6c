/* Workers asking Debian's libcrypto (libcrypto.so.3 of libssl3) for its version string, counting which
 * answer they got: the shipped one, or the one of the patch the tests apply to OpenSSL_version(). */
#include <string.h>

#include "workers.h"

const char *OpenSSL_version(int type);
long shipped_answers, patched_answers;

static void *worker(void *arg)
{
    (void)arg;
    for (long i = 1;; i++) {
        const char *version = OpenSSL_version(0);
        if (strcmp(version, "Kintsugi-patched OpenSSL") == 0)
            __atomic_fetch_add(&patched_answers, 1, __ATOMIC_RELAXED);
        else if (strncmp(version, "OpenSSL 3.", 10) == 0)
            __atomic_fetch_add(&shipped_answers, 1, __ATOMIC_RELAXED);
        else {
            fprintf(stderr, "unexpected version string '%s'\n", version);
            abort();
        }
        breathe(i);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    run_workers(argc, argv, worker);
}
