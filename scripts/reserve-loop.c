/* The reservation fast path in C, one thread, no ring: what the clock read and
 * the CAS cost on this machine apart from everything else an event does
 * (docs/performance.md "Plain rdtsc, ordered by the ring's (write, time) pair").
 * Each variant: load the write position, read the clock, three holder-record
 * stores, the CAS, an 8-byte store into the buffer, the commit fetch_add, the
 * record clear.
 *
 *   cc -O2 -mcx16 -o /tmp/reserve-loop scripts/reserve-loop.c && /tmp/reserve-loop
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

typedef unsigned __int128 u128;

/* The (write, time) pair, on its own cache line. */
static struct __attribute__((aligned(64))) {
    volatile uint64_t pos;
    volatile uint64_t time;
} w;
static volatile uint64_t commit_word, record[3];
static unsigned char buf[1 << 16];

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cas16(u128 old, u128 new)
{
    return __sync_bool_compare_and_swap((u128 *)&w, old, new);
}

/* The same CAS called through a pointer, as portable_atomic dispatches it. */
static int (*volatile cas16_ptr)(u128, u128) = cas16;

enum clock { RDTSCP, LFENCE_RDTSC, RDTSC, NONE };

static inline uint64_t read_clock(enum clock c, uint64_t pos)
{
    unsigned aux;
    switch (c) {
    case RDTSCP: return __rdtscp(&aux);
    case LFENCE_RDTSC: _mm_lfence(); return __rdtsc();
    case RDTSC: return __rdtsc();
    default: return pos;
    }
}

/* ns per reservation: an 8-byte CAS on the position, or (pair) the 16-byte CAS
 * of the position and the time, dating the event no earlier than the pair's. */
static double run(enum clock c, int pair, int through_ptr, long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        uint64_t o = w.pos, last = w.time, t = read_clock(c, o);
        if (pair && t < last)
            t = last;
        record[0] = t, record[1] = o, record[2] = 20;
        if (!pair)
            __sync_bool_compare_and_swap(&w.pos, o, o + 20);
        else if (through_ptr)
            cas16_ptr((u128)last << 64 | o, (u128)t << 64 | (o + 20));
        else
            cas16((u128)last << 64 | o, (u128)t << 64 | (o + 20));
        *(uint64_t *)(buf + (o & 0xfff0)) = t;
        __sync_fetch_and_add(&commit_word, 20);
        record[2] = 0;
    }
    return (now_ns() - t0) / n;
}

int main(void)
{
    const long n = 20000000;
    for (int round = 0; round < 3; round++) {
        printf("rdtscp + 8-byte CAS          %.2f ns\n", run(RDTSCP, 0, 0, n));
        printf("lfence; rdtsc + 8-byte CAS   %.2f ns\n", run(LFENCE_RDTSC, 0, 0, n));
        printf("rdtsc + 16-byte CAS          %.2f ns\n", run(RDTSC, 1, 0, n));
        printf("rdtsc + 16-byte CAS, pointer %.2f ns\n", run(RDTSC, 1, 1, n));
        printf("rdtsc + 8-byte CAS (unsafe)  %.2f ns\n", run(RDTSC, 0, 0, n));
        printf("no clock + 8-byte CAS        %.2f ns\n", run(NONE, 0, 0, n));
    }
    return 0;
}
