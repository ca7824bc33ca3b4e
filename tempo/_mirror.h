/* The arena's memory and the core's clock and waits: the few things tempo
 * needs from the operating system, kept out of the Cython code.
 *
 * The arena is a "mirrored" ring: one shared-memory object of `size` bytes
 * mapped twice, back to back, so that base[i] and base[i + size] are the same
 * byte. A payload of up to `size` bytes written at any offset in [0, size) is
 * therefore contiguous in virtual memory, however it straddles the ring's end:
 * the ring never has to skip space to keep a payload whole, so the byte count
 * alone decides admission and nothing is ever too fragmented to place.
 */
#ifndef TEMPO_MIRROR_H
#define TEMPO_MIRROR_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Internal consistency checks, compiled in only with TEMPO_DEBUG=1 (see
 * setup.py): the hot path pays nothing for them in a normal build. */
#ifdef TEMPO_DEBUG
#define tempo_assert(cond) \
    do { if (!(cond)) { fprintf(stderr, "tempo: internal check failed: %s (%s:%d)\n", \
                                #cond, __FILE__, __LINE__); abort(); } } while (0)
#else
#define tempo_assert(cond) ((void)0)
#endif

/* The dispatcher's lock (docs/internals.md, "Free-threading"). Every change
 * to a dispatcher's shared state (arena, slot ring, counters, a batch's view
 * count, the waiter counts behind the conditions) is a short region of C
 * that runs no Python code and allocates nothing. With the GIL, holding the
 * GIL already makes such a region atomic, so the lock compiles to nothing
 * there and the hot path pays nothing. Without it (Py_GIL_DISABLED) each
 * region holds a PyMutex: one byte, uncontended lock and unlock are one
 * compare-and-swap each, and a thread that has to block detaches from the
 * interpreter so a stop-the-world garbage collection never waits on it. */
#ifdef Py_GIL_DISABLED
typedef PyMutex tempo_lock_t;

/* A contended PyMutex_Lock calls sched_yield() up to 40 times and then parks
 * the thread (futex calls on both sides). Our regions hold the lock for tens
 * of nanoseconds, so a thread that meets a short hold (a consumer taking a
 * batch, the driver sealing one) gets it within a few hundred: it first
 * waits about that long on the CPU (`pause`, 1, 2, 4, 8 and 16 of them
 * between looks, 31 in all, under 1 us; reading without writing so the line
 * stays with the holder), and
 * only then falls back to PyMutex_Lock, which yields, detaches and blocks.
 * Short on purpose: two producers that keep meeting on the lock do better
 * when the loser yields and the winner runs on (measured on 3.13t: this spin
 * beat both no spin and a flat 96-pause one, docs/performance.md).
 * Taking the lock here is PyMutex's own fast path: set the locked bit with
 * compare-and-swap, keeping its "has parked" bit. */
#define TEMPO_SPIN 16
static inline void tempo_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
static void tempo_lock_contended(PyMutex *m) {
    for (int spent = 0, delay = 1; spent < TEMPO_SPIN; spent += delay, delay *= 2) {
        for (int k = 0; k < delay; k++)
            tempo_cpu_relax();
        uint8_t v = __atomic_load_n(&m->_bits, __ATOMIC_RELAXED);
        if (!(v & _Py_LOCKED) &&
            __atomic_compare_exchange_n(&m->_bits, &v, (uint8_t)(v | _Py_LOCKED), 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return;
    }
    PyMutex_Lock(m);
}
static inline void tempo_lock(PyMutex *m) {
    uint8_t expected = _Py_UNLOCKED;
    if (!__atomic_compare_exchange_n(&m->_bits, &expected, _Py_LOCKED, 0,
                                     __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        tempo_lock_contended(m);
}
#define tempo_unlock(m) PyMutex_Unlock(m)
#define tempo_lock_reset(m) (*(m) = (PyMutex){0})
#define TEMPO_FREE_THREADED 1
#else
typedef struct { char unused; } tempo_lock_t;
#define tempo_lock(m) ((void)(m))
#define tempo_unlock(m) ((void)(m))
#define tempo_lock_reset(m) ((void)(m))
#define TEMPO_FREE_THREADED 0
#endif

/* The few fields read without the dispatcher's lock (docs/internals.md,
 * "Memory order"): their writers, which hold the lock, store them with these
 * and their lock-free readers load them with these, so the access is atomic
 * (no torn value, no data race for the compiler to exploit) at the weakest
 * order that suffices. Relaxed throughout: each such read is a hint
 * (where to fault pages in, a state name, a fast "released" check) whose
 * reader either acts on nothing else the writer wrote or checks again
 * under the lock before it does. On x86-64 and arm64 a relaxed load or store
 * of an aligned int or int64 is the plain instruction: the hot path pays
 * nothing. */
static inline int tempo_load_int(const int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void tempo_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void tempo_store_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
/* A condition's epoch (Core._ready_epoch and the others): bumped by a
 * notifier under the dispatcher's lock, or under the condition's mutex when
 * a producer signals a consumer after unlocking (Core._signal_ready), and
 * read under either; relaxed, because what a waiter acts on is decided
 * under the mutex (tempo_cond_wait_until) and re-checked under the lock. */
static inline uint64_t tempo_load_epoch(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void tempo_bump_epoch(uint64_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_RELAXED); }

/* Which item the next Batch.__getbuffer__ on this thread exports: set by
 * Batch._view around the memoryview it makes. Per thread, so threads reading
 * the same batch in parallel cannot swap each other's index; tagged with the
 * batch, so a memoryview of another batch made meanwhile (a finalizer run by
 * the allocation) does not pick it up. */
static __thread void *tempo_export_batch = NULL;
static __thread Py_ssize_t tempo_export_index = -1;

/* A batch's mark: its item count, this bit once it may be reused, and this
 * one if stop() dropped it instead of handing it out. */
#define TEMPO_RELEASED 0x80000000u
#define TEMPO_DROPPED 0x40000000u
#define TEMPO_COUNT 0x3fffffffu

static size_t tempo_page_size(void) {
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

static int tempo_anonymous_fd(size_t size) {
    int fd = -1;
#ifdef SYS_memfd_create
    fd = (int)syscall(SYS_memfd_create, "tempo-arena", 1u /* MFD_CLOEXEC */);
#endif
    if (fd < 0) {
        /* No memfd (old kernel, non-Linux): an unlinked temporary file. */
        const char *dir = getenv("TMPDIR");
        char path[4096];
        snprintf(path, sizeof path, "%s/tempo-arena-XXXXXX", dir && *dir ? dir : "/tmp");
        fd = mkstemp(path);
        if (fd < 0) return -1;
        unlink(path);
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Map `size` bytes (a multiple of the page size) twice, back to back.
 * Returns NULL with errno set on failure. */
static char *tempo_mirror_map(size_t size) {
    int fd = tempo_anonymous_fd(size);
    if (fd < 0) return NULL;
    char *base = mmap(NULL, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) goto fail;
    if (mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED
        || mmap(base + size, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        int saved = errno;
        munmap(base, 2 * size);
        errno = saved;
        goto fail;
    }
    close(fd);  /* the mappings keep the memory object alive */
    return base;
fail:
    {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    return NULL;
}

/* Fault in `len` bytes at `addr` (writable) without touching their contents,
 * so the writer later finds the pages already there. Safe while another
 * thread writes the same pages: nothing is written. Returns 0 or an errno;
 * EINVAL on kernels before 5.14, which lack MADV_POPULATE_WRITE. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
static int tempo_populate(char *addr, size_t len) {
    return madvise(addr, len, MADV_POPULATE_WRITE) ? errno : 0;
}

/* Fault in all of [addr, addr + len) now (Dispatcher(prefault=True)). Without
 * MADV_POPULATE_WRITE (EINVAL before Linux 5.14) every page is written once
 * instead: the ring is fresh, its contents are nobody's yet. Returns 0 or
 * the error (ENOMEM: the memory is not there to be had; short of memory the
 * kernel may also invoke its out-of-memory killer instead). */
static int tempo_prefault(char *addr, size_t len) {
    int err = tempo_populate(addr, len);
    if (err == EINVAL) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        for (size_t i = 0; i < len; i += page)
            ((volatile char *)addr)[i] = 0;
        err = 0;
    }
    return err;
}

/* Fault in the ring from byte `at` on, a chunk at a time, until `ahead`
 * bytes past the writer's position (*head, read again after each chunk as
 * the writer moves), the ring's end, or `burst` bytes in all. Returns where
 * it got; *err is 0 or tempo_populate's error. Runs without the GIL and
 * without the dispatcher's lock, so it only reads *head (an aligned 64-bit
 * load: at worst a slightly old position) and returns in one go: a driver
 * that took the GIL back after every chunk would wait for a busy producer to
 * hand it over (the switch interval, 5 ms) each time. */
static int64_t tempo_populate_ahead(char *base, int64_t size, const int64_t *head, int64_t at,
                                    int64_t ahead, int64_t chunk, int64_t burst, int *err) {
    int64_t stop = at + burst;
    *err = 0;
    for (;;) {
        int64_t want = __atomic_load_n(head, __ATOMIC_RELAXED) + ahead;
        if (want > size) want = size;
        if (want > stop) want = stop;
        if (at >= want) return at;
        int64_t n = want - at < chunk ? want - at : chunk;
        *err = tempo_populate(base + at, (size_t)n);
        if (*err) return at;
        at += n;
    }
}

static void tempo_mirror_unmap(char *base, size_t size) {
    if (base) munmap(base, 2 * size);
}

/* In a forked child, make the mapping private: the memory object is shared
 * with the parent, which goes on reusing it. The `len` held bytes at ring
 * offset `off` are put back at every address a view may use: base + off
 * onwards (running into the mirror half where they cross the ring's end) and,
 * for the part past the end, its alias at the ring's start, where items that
 * begin after the end are addressed. The rest becomes zero-filled private
 * memory. The bytes come from `snapshot` (the parent's copy, made before the
 * fork: see Core._before_fork), or, if it is NULL, from the shared mapping as
 * it is now. Returns 0, or -1 with errno set. */
static int tempo_mirror_privatize(char *base, size_t size, size_t off, size_t len,
                                  const char *snapshot) {
    char *copy = NULL;
    if (len && !snapshot) {
        copy = malloc(len);
        if (!copy) return -1;
        memcpy(copy, base + off, len);
        snapshot = copy;
    }
    if (mmap(base, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0) == MAP_FAILED) {
        int saved = errno;
        free(copy);
        errno = saved;
        return -1;
    }
    if (len) {
        memcpy(base + off, snapshot, len);
        if (off + len > size) memcpy(base, snapshot + (size - off), off + len - size);
    }
    free(copy);
    return 0;
}

/* Copy a payload into the arena. Large payloads bypass the cache with
 * non-temporal stores: the arena is far larger than the cache and is read
 * later (by a consumer, often by the kernel), so ordinary stores would first
 * read every destination line from memory only to overwrite it. */
#if defined(__SSE2__)
#include <emmintrin.h>
#define TEMPO_STREAM_MIN 4096
static inline void tempo_copy(char *dst, const char *src, size_t n) {
    if (n < TEMPO_STREAM_MIN) {
        memcpy(dst, src, n);
        return;
    }
    size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
    memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    while (n >= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)src);
        __m128i b = _mm_loadu_si128((const __m128i *)(src + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + 48));
        _mm_stream_si128((__m128i *)dst, a);
        _mm_stream_si128((__m128i *)(dst + 16), b);
        _mm_stream_si128((__m128i *)(dst + 32), c);
        _mm_stream_si128((__m128i *)(dst + 48), d);
        src += 64;
        dst += 64;
        n -= 64;
    }
    memcpy(dst, src, n);
    /* Streamed stores are weakly ordered: make them visible before the
     * slot that publishes the payload. */
    _mm_sfence();
}
#else
static inline void tempo_copy(char *dst, const char *src, size_t n) { memcpy(dst, src, n); }
#endif

static double tempo_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A mutex and a condition variable on the monotonic clock, so timed waits are
 * immune to wall-clock jumps. */
static int tempo_cond_init(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc) return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (!rc) rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

/* Deadlines this far out (about 30 billion years) are waited on as no
 * deadline at all: a larger one would overflow time_t in the timespec (and a
 * double has no whole-nanosecond precision there anyway), and a wait that
 * returns at once would have its caller spin. */
#define TEMPO_FOREVER 1e18

/* Wait on `cond` (with `mutex` held) until *epoch != seen or the monotonic
 * `deadline` passes (INFINITY, or anything from TEMPO_FOREVER on: no
 * deadline). Called without the GIL. */
static void tempo_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                  uint64_t *epoch, uint64_t seen, double deadline) {
    while (tempo_load_epoch(epoch) == seen) {
        if (!(deadline < TEMPO_FOREVER)) {
            pthread_cond_wait(cond, mutex);
            continue;
        }
        if (deadline <= tempo_monotonic()) return;
        struct timespec ts;
        double whole = floor(deadline);
        ts.tv_sec = (time_t)whole;
        ts.tv_nsec = (long)((deadline - whole) * 1e9);
        if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
        if (pthread_cond_timedwait(cond, mutex, &ts) == ETIMEDOUT) return;
    }
}

/* One write or send; -1 with errno set on failure. Sockets get
 * MSG_NOSIGNAL: a closed peer is an EPIPE error, never a SIGPIPE; and
 * MSG_DONTWAIT when the caller polled first and must not block. */
static Py_ssize_t tempo_write(int fd, const char *data, Py_ssize_t n, int is_socket, int dontwait) {
    if (is_socket)
        return (Py_ssize_t)send(fd, data, (size_t)n, MSG_NOSIGNAL | (dontwait ? MSG_DONTWAIT : 0));
    return (Py_ssize_t)write(fd, data, (size_t)n);
}

/* What an fd is, for writing: a stream that may block for ever (pipe, FIFO,
 * socket), a socket, in O_NONBLOCK mode. */
#define TEMPO_FD_STREAM 1
#define TEMPO_FD_SOCKET 2
#define TEMPO_FD_NONBLOCKING 4
#define TEMPO_PIPE_BUF 4096
static int tempo_fd_kind(int fd) {
    int kind = 0;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        if (S_ISFIFO(st.st_mode)) kind |= TEMPO_FD_STREAM;
        if (S_ISSOCK(st.st_mode)) kind |= TEMPO_FD_STREAM | TEMPO_FD_SOCKET;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags != -1 && (flags & O_NONBLOCK)) kind |= TEMPO_FD_NONBLOCKING;
    return kind;
}

/* Wait until fd is writable or the monotonic deadline passes: 0 when
 * writable, ETIMEDOUT, EINTR, or another errno. */
static int tempo_wait_writable(int fd, double deadline) {
    struct pollfd p;
    p.fd = fd;
    p.events = POLLOUT;
    p.revents = 0;
    double left = deadline - tempo_monotonic();
    if (left <= 0) return ETIMEDOUT;
    int ms = left > 2e9 / 1000 ? 2000000000 : (int)(left * 1000.0) + 1;
    int rc = poll(&p, 1, ms);
    if (rc > 0) return 0;
    if (rc == 0) return ETIMEDOUT;
    return errno;
}

/* Wake an asyncio loop: its eventfd (or pipe) becomes readable. */
static void tempo_wake_fd(int fd) {
    uint64_t one = 1;
    ssize_t rc = write(fd, &one, sizeof one);
    (void)rc;  /* full means already awake */
}

#endif /* TEMPO_MIRROR_H */
