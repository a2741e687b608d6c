/* What the programs these tests patch share: worker threads that call the patched code all the time, and a main
 * thread that starts them, says "ready" (what RunningTarget waits for) and waits to be killed. Included by the
 * programs next to it; loop.c keeps its own main, being copied alone into other test projects. */
#ifndef KINTSUGI_TEST_WORKERS_H
#define KINTSUGI_TEST_WORKERS_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Every thousandth call a worker sleeps a millisecond, so that the test process gets the CPU it needs. */
static inline void breathe(long call)
{
    if (call % 1000 == 0)
        usleep(1000);
}

/* Starts argv[1] workers (default 4), each given its index (0, 1, ...) as its argument, then prints "ready". */
__attribute__((noreturn)) static void run_workers(int argc, char **argv, void *(*worker)(void *))
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    for (long t = 0; t < threads; t++) {
        pthread_t thread;
        pthread_create(&thread, NULL, worker, (void *)t);
    }
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
}

#endif
