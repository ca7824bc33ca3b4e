/* The memory-copy floor: how fast can this machine copy payloads of S bytes
 * into a 64 MiB ring, with no Python, no locking and no bookkeeping at all?
 *
 * Built and run by bench/memfloor.py (cc -O3, like tempo's extension).  It
 * includes tempo's own C helpers (tempo/_mirror.h), so "tempo_copy" below is
 * exactly the copy tempo's enqueue does (plain memcpy under 4 KiB, streaming
 * stores above) and the "mirror" ring is exactly tempo's arena memory (a memfd
 * mapped twice).
 *
 * Usage: memfloor SIZE [SIZE ...]
 * For every size and every variant, copies COUNT payloads (256 MiB worth, and
 * at least 256 payloads) one after the other into the ring, wrapping at its
 * end, REPS times; prints one line per (size, variant):
 *
 *   size variant ns_per_payload_median ns_per_payload_min gb_per_s_median
 *
 * Variants:
 *   memcpy/anon/pool     memcpy into a private anonymous ring; sources cycle
 *                        through a 32 MiB pool of distinct payloads (as
 *                        compare.py's producers do)
 *   tempo_copy/mirror/pool   tempo's copy into tempo's kind of ring, same pool
 *   tempo_copy/mirror/hot    the same from one small source that stays in the
 *                        cache (compare.py's W1b: a reused bytearray)
 *   memcpy/mirror/hot    plain memcpy into the mirror ring from the hot source
 */
#include <sys/types.h>
typedef ssize_t Py_ssize_t; /* _mirror.h is written for the extension, which has Python.h */
#include "../tempo/_mirror.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MiB (1024u * 1024u)
#define RING (64u * MiB)
#define POOL (32u * MiB)
#define REPS 7

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef void (*copy_fn)(char *, const char *, size_t);

static void plain_copy(char *dst, const char *src, size_t n) { memcpy(dst, src, n); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Copy `count` payloads of `size` bytes into `ring` (of `ring_size` bytes; a
 * mirrored ring may be written past its end, a plain one wraps before a
 * payload would cross it).  Sources: `pool` slots in order, or `hot` alone. */
static double run(copy_fn copy, char *ring, size_t ring_size, int mirrored, const char *pool,
                  size_t pool_slots, const char *hot, size_t size, size_t count) {
    size_t off = 0, slot = 0;
    double t0 = now();
    for (size_t i = 0; i < count; i++) {
        const char *src = hot ? hot : pool + slot * size;
        if (!hot && ++slot == pool_slots) slot = 0;
        if (!mirrored && off + size > ring_size) off = 0;
        copy(ring + off, src, size);
        off += size;
        if (off >= ring_size) off -= ring_size;
    }
    double t1 = now();
    /* Keep the compiler from discarding the copies. */
    volatile char sink = ring[(off + ring_size - 1) % ring_size];
    (void)sink;
    return (t1 - t0) / (double)count * 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SIZE [SIZE ...]\n", argv[0]);
        return 2;
    }
    char *anon = malloc(RING);
    char *mirror = tempo_mirror_map(RING);
    char *pool = malloc(POOL);
    char *hot = malloc(1u * MiB + 64);
    if (!anon || !mirror || !pool || !hot) {
        perror("memfloor: allocation");
        return 1;
    }
    /* Touch everything once: page faults are not what we measure. */
    memset(anon, 1, RING);
    memset(mirror, 1, RING);
    for (size_t i = 0; i < POOL; i++) pool[i] = (char)(i * 2654435761u >> 24);
    memset(hot, 7, 1u * MiB + 64);

    struct {
        const char *name;
        copy_fn copy;
        char *ring;
        int mirrored;
        int use_hot;
    } variants[] = {
        {"memcpy/anon/pool", plain_copy, anon, 0, 0},
        {"tempo_copy/mirror/pool", tempo_copy, mirror, 1, 0},
        {"tempo_copy/mirror/hot", tempo_copy, mirror, 1, 1},
        {"memcpy/mirror/hot", plain_copy, mirror, 1, 1},
    };
    for (int a = 1; a < argc; a++) {
        size_t size = strtoull(argv[a], NULL, 10);
        if (size == 0 || size > 1u * MiB) {
            fprintf(stderr, "memfloor: size must be 1..1 MiB\n");
            return 2;
        }
        size_t pool_slots = POOL / size;
        size_t count = 256u * (size_t)MiB / size;
        if (count < 256) count = 256;
        for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
            double ns[REPS];
            /* One untimed pass, then REPS timed ones. */
            run(variants[v].copy, variants[v].ring, RING, variants[v].mirrored, pool, pool_slots,
                variants[v].use_hot ? hot : NULL, size, count / 4);
            for (int r = 0; r < REPS; r++)
                ns[r] = run(variants[v].copy, variants[v].ring, RING, variants[v].mirrored, pool,
                            pool_slots, variants[v].use_hot ? hot : NULL, size, count);
            qsort(ns, REPS, sizeof ns[0], cmp_double);
            double med = ns[REPS / 2];
            printf("%zu %s %.2f %.2f %.3f\n", size, variants[v].name, med, ns[0], (double)size / med);
            fflush(stdout);
        }
    }
    return 0;
}
