/* The LTTng anchor app (../shared/anchors/lttng/app.c) under ustrace: one event
 * bench:ev with an int and a string, N events (argv[1], default 1); with a second
 * argument it prints `N events X ns/event` on stderr. `ustrace bench churn --app c`
 * runs it, so that comparisons with LTTng run the same C program under both.
 *
 *   scripts/install-c.sh /usr/local
 *   cc -O2 -o app examples/c/app.c $(pkg-config --cflags --libs ustrace)
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ustrace/ustrace.h>

USTRACE_EVENT(bench, ev, USTRACE_INFO, USTRACE_FIELDS(ustrace_i32(i), ustrace_string(s)));

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        ustrace_tracepoint(bench, ev, (int)i, "hello");
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (argc > 2)
        fprintf(stderr, "%ld events %.1f ns/event\n", n,
                ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (double)n);
    return 0;
}
