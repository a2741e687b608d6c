/* A multi-threaded target: workers call compute() in a tight loop and check every result. compute() sleeps
 * inside now and then, and with "stuck" one thread never leaves it. Built twice by the tests: as shipped, and
 * with -DFIXED -ffunction-sections -fdata-sections as the fix. The counters tell the tests which code ran. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long old_calls, new_calls;
static volatile long sleep_inside_every = 50000;

__attribute__((noinline)) long compute(long x)
{
    if (x < 0)
        for (;;) sleep(1);                 /* "stuck": never returns */
    if (x % sleep_inside_every == 0)
        usleep(200);                       /* a thread asleep inside the function being replaced */
#ifndef FIXED
    __atomic_fetch_add(&old_calls, 1, __ATOMIC_RELAXED);
    return x * 2 + 1;
#else
    __atomic_fetch_add(&new_calls, 1, __ATOMIC_RELAXED);
    return x * 2 + 3;
#endif
}

static void *worker(void *arg)
{
    long id = (long)arg;
    for (long i = 1;; i++) {
        long x = i * 64 + id;
        long r = compute(x);
        if (r != x * 2 + 1 && r != x * 2 + 3) {
            fprintf(stderr, "wrong result %ld for %ld\n", r, x);
            abort();
        }
        if (i % 1000 == 0)
            usleep(1000);
    }
    return NULL;
}

static void *stuck(void *arg)
{
    (void)arg;
    compute(-1);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    for (long t = 0; t < threads; t++) {
        pthread_t thread;
        pthread_create(&thread, NULL, worker, (void *)t);
    }
    if (argc > 2 && strcmp(argv[2], "stuck") == 0) {
        pthread_t thread;
        pthread_create(&thread, NULL, stuck, NULL);
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
