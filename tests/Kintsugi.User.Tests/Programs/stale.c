/* A target whose idle thread keeps compute()'s address (plus a few bytes, as a return address would be) in a
 * local on its live stack although compute() is not running there: a conservative stack scan takes the word
 * for a return address and never finds the process safe; unwinding with .eh_frame knows better. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

long old_calls, new_calls;

__attribute__((noinline)) long compute(long x)
{
#ifndef FIXED
    __atomic_fetch_add(&old_calls, 1, __ATOMIC_RELAXED);
    return x * 2 + 1;
#else
    __atomic_fetch_add(&new_calls, 1, __ATOMIC_RELAXED);
    return x * 2 + 3;
#endif
}

__attribute__((noinline)) static void idle_with_a_stale_word(void)
{
    volatile unsigned long stale[2];
    stale[0] = (unsigned long)compute + 4;
    stale[1] = 0;
    for (;;) pause();
}

static void *holder(void *arg)
{
    (void)arg;
    idle_with_a_stale_word();
    return NULL;
}

static void *worker(void *arg)
{
    (void)arg;
    for (long i = 1;; i++) {
        compute(i);
        if (i % 1000 == 0)
            usleep(1000);
    }
    return NULL;
}

int main(void)
{
    pthread_t thread;
    pthread_create(&thread, NULL, holder, NULL);
    pthread_create(&thread, NULL, worker, NULL);
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
