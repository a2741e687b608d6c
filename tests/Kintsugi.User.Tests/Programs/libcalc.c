/* A shared library whose function calc_scale() the tests patch in a running process. Built twice: as shipped
 * (-fPIC -shared) and with -DFIXED -ffunction-sections -fdata-sections as the fix. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

long calc_old_calls, calc_new_calls;
static const long factors[4] = {3, 5, 7, 11};

__attribute__((noinline)) long calc_scale(long x)
{
    char label[32];
    if (x % 20000 == 0)
        usleep(100);
    snprintf(label, sizeof label, "%ld", x);   /* an import through the library's own PLT */
    long digits = (long)strlen(label);
#ifndef FIXED
    __atomic_fetch_add(&calc_old_calls, 1, __ATOMIC_RELAXED);
    return x * factors[x & 3] + digits - digits;
#else
    __atomic_fetch_add(&calc_new_calls, 1, __ATOMIC_RELAXED);
    return x * factors[x & 3] + 1;
#endif
}
