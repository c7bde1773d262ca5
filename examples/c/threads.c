/* T producer threads emitting bench:ev(int, string) (the event of examples/c/app.c
 * and LTTng's anchor app) N times in all, for scripts/c-thread-scaling.sh. Built
 * against libustrace with -DUSTRACE, else against liblttng-ust with the anchor's tp.h
 * and tp.c, so that both tracers run the same program. Prints
 * `T threads N events X ns/event Y events/s` on stdout: wall time from the moment all
 * threads are released to the last one's end.
 *
 *   threads T N */
#define _POSIX_C_SOURCE 200112L
#include <pthread.h>
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

static pthread_barrier_t go;
static long per_thread;

static void *produce(void *unused)
{
    (void)unused;
    pthread_barrier_wait(&go);
    for (long i = 0; i < per_thread; i++)
        EMIT(i);
    return NULL;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS EVENTS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    long events = atol(argv[2]);
    if (threads < 1 || threads > 256 || events < threads) {
        fprintf(stderr, "THREADS must be 1..256 and EVENTS at least THREADS\n");
        return 2;
    }
    per_thread = events / threads;
    pthread_t tid[256];
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (int t = 0; t < threads; t++)
        if (pthread_create(&tid[t], NULL, produce, NULL) != 0) {
            perror("pthread_create");
            return 1;
        }
    pthread_barrier_wait(&go);
    double start = now_ns();
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    double ns = now_ns() - start;
    long total = per_thread * threads;
    printf("%d threads %ld events %.1f ns/event %.0f events/s\n", threads, total, ns / total,
           total / ns * 1e9);
    return 0;
}
