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

static void tempo_mirror_unmap(char *base, size_t size) {
    if (base) munmap(base, 2 * size);
}

/* In a forked child, make the mapping private: the memory object is shared
 * with the parent, which will go on reusing it. The `len` live bytes at ring
 * offset `off` are preserved at every address a view may use: base + off
 * onwards (running into the mirror half where they cross the ring's end) and,
 * for the part past the end, its alias at the ring's start, where items that
 * begin after the end are addressed. The rest becomes zero-filled private
 * memory. Returns 0, or -1 with errno set. */
static int tempo_mirror_privatize(char *base, size_t size, size_t off, size_t len) {
    char *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy) return -1;
        memcpy(copy, base + off, len);
    }
    if (mmap(base, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0) == MAP_FAILED) {
        int saved = errno;
        free(copy);
        errno = saved;
        return -1;
    }
    if (len) {
        memcpy(base + off, copy, len);
        if (off + len > size) memcpy(base, copy + (size - off), off + len - size);
        free(copy);
    }
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

/* Wait on `cond` (with `mutex` held) until *epoch != seen or the monotonic
 * `deadline` passes (INFINITY: no deadline). Called without the GIL. */
static void tempo_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                  volatile uint64_t *epoch, uint64_t seen, double deadline) {
    while (*epoch == seen) {
        if (isinf(deadline)) {
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
