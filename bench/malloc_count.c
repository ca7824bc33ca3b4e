/* An LD_PRELOAD shim that counts every malloc, calloc and realloc call in
 * the process, for bench/mallocs.py: tempo_malloc_count() reads the count.
 * dlsym() may itself call calloc before the real one is known; those few
 * early calls are served from a static buffer. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
static atomic_long n_alloc;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static char boot[1 << 16]; static size_t boot_used;
void *malloc(size_t n) { if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc"); atomic_fetch_add(&n_alloc, 1); return real_malloc(n); }
void *calloc(size_t a, size_t b) {
    if (!real_calloc) { /* dlsym may calloc: serve from a static buffer */
        static int in; if (in) { void *p = boot + boot_used; boot_used += (a*b + 15) & ~15; return p; }
        in = 1; real_calloc = dlsym(RTLD_NEXT, "calloc"); in = 0; }
    atomic_fetch_add(&n_alloc, 1); return real_calloc(a, b); }
void *realloc(void *p, size_t n) { if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc"); atomic_fetch_add(&n_alloc, 1); return real_realloc(p, n); }
long tempo_malloc_count(void) { return atomic_load(&n_alloc); }
