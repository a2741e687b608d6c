/* Workers calling calc_scale() of libcalc.so and checking every result against the shipped and the fixed rule. */
#include "workers.h"

long calc_scale(long x);
static const long factors[4] = {3, 5, 7, 11};

static void *worker(void *arg)
{
    long id = (long)arg;
    for (long i = 1;; i++) {
        long x = i * 16 + id;
        long r = calc_scale(x);
        if (r != x * factors[x & 3] && r != x * factors[x & 3] + 1) {
            fprintf(stderr, "wrong result %ld for %ld\n", r, x);
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
