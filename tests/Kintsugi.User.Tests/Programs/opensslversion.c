/* Workers asking Debian's libcrypto (libcrypto.so.3 of libssl3) for its version string, counting which
 * answer they got: the shipped one, or the one of the patch the tests apply to OpenSSL_version(). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
        if (i % 1000 == 0)
            usleep(1000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    for (int t = 0; t < threads; t++) {
        pthread_t thread;
        pthread_create(&thread, NULL, worker, NULL);
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
