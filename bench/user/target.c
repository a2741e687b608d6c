/* The benchmark's target: N threads calling compute() in a tight loop (a short sleep every 10,000 calls so
 * that 64 threads on 2 cores still let the machine breathe), or, with "server", N threads that each handle a
 * request (one call) and then wait 5 ms for the next, as a server's thread pool does.
 * Built as shipped, and with -DFIXED as the fix. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

long calls;

__attribute__((noinline)) long compute(long x)
{
    __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
#ifndef FIXED
    return x * 2 + 1;
#else
    return x * 2 + 3;
#endif
}

static int server;

static void *worker(void *arg)
{
    for (long i = (long)arg;; i++) {
        if (server) {
            if (compute(i) != i * 2 + 1 && compute(i) != i * 2 + 3) abort();
            usleep(5000);
            continue;
        }
        long r = compute(i);
        if (r != i * 2 + 1 && r != i * 2 + 3) abort();
        if (i % 10000 == 0) usleep(1000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    server = argc > 2 && argv[2][0] == 's';
    for (long t = 0; t < threads; t++) {
        pthread_t thread;
        pthread_create(&thread, NULL, worker, (void *)(t * 1000003));
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
