/* A producer at a fixed rate, for `ustrace bench drain`: emits bench:ev(int, string),
 * the event of examples/c/app.c and LTTng's anchor app, RATE times a second for
 * SECONDS, then prints `emitted N in T s` on stdout. Built against libustrace with
 * -DUSTRACE, else against liblttng-ust with the anchor's tp.h and tp.c, so that both
 * tracers drain the same program at the same rate.
 *
 *   paced RATE SECONDS
 *
 * Pacing: the events of each ~0.5 ms slice are emitted back to back, then the
 * program sleeps until the slice's end on CLOCK_MONOTONIC; a producer that falls
 * behind does not sleep, so `N / T` is the rate it reached. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef USTRACE
#include <ustrace/ustrace.h>
USTRACE_EVENT(bench, ev, USTRACE_INFO, USTRACE_FIELDS(ustrace_i32(i), ustrace_string(s)));
#define EMIT(i) ustrace_tracepoint(bench, ev, (int)(i), "hello")
#else
#include "tp.h"
#define EMIT(i) lttng_ust_tracepoint(bench, ev, (int)(i), "hello")
#endif

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s RATE SECONDS\n", argv[0]);
        return 2;
    }
    double rate = atof(argv[1]), seconds = atof(argv[2]);
    if (rate <= 0 || seconds <= 0) {
        fprintf(stderr, "RATE and SECONDS must be positive\n");
        return 2;
    }
    long total = (long)(rate * seconds);
    long slice = (long)(rate / 2000);
    if (slice < 1)
        slice = 1;
    double start = now_ns();
    for (long i = 0; i < total;) {
        for (long end = i + slice; i < end && i < total; i++)
            EMIT(i);
        double wait = start + i * 1e9 / rate - now_ns();
        if (wait > 0) {
            struct timespec d = {(time_t)(wait / 1e9), (long)((long long)wait % 1000000000LL)};
            nanosleep(&d, NULL);
        }
    }
    printf("emitted %ld in %.6f s\n", total, (now_ns() - start) / 1e9);
    return 0;
}
