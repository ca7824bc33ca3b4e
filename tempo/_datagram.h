/* Datagrams: every item of a batch as its own message, through sendmmsg(2),
 * straight from the arena. Kept apart from _mirror.h, which is about the
 * arena's memory and whole-region writes. */
#ifndef TEMPO_DATAGRAM_H
#define TEMPO_DATAGRAM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Linux takes at most UIO_MAXIOV (1024) messages per sendmmsg() (it sends
 * the first 1024 of a longer vector and says so in its return value) and
 * at most that many buffers per sendmsg()/writev() (EMSGSIZE / EINVAL past
 * it). A chunk this size bounds the scratch headers below. */
#define TEMPO_MMSG_CHUNK 1024

/* tempo.IOV_MAX: the most buffers one sendmsg()/writev() takes. */
static long tempo_iov_max(void) {
    long n = sysconf(_SC_IOV_MAX);
    return n > 0 ? n : TEMPO_MMSG_CHUNK;
}

/* The socket's type (SOCK_DGRAM, SOCK_STREAM, ...), or -1 with errno set. */
static int tempo_socket_type(int fd) {
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return -1;
    return type;
}

/* A private duplicate of fd for one call (close-on-exec), or -1 with errno
 * set. Sending on it, not on the socket object's fd, means a close() of
 * that fd by another thread mid-call cannot make the number name an
 * unrelated file that the rest of the batch would go to. */
static int tempo_dup(int fd) {
    return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

/* Headers for up to `n` messages (n <= TEMPO_MMSG_CHUNK), one allocation
 * (tempo_sendmmsg fills each header before use): NULL if out of memory.
 * Free with free(). */
static void *tempo_mmsg_scratch(Py_ssize_t n) {
    return malloc((size_t)n * (sizeof(struct mmsghdr) + sizeof(struct iovec)));
}

/* One sendmmsg() of items [0, count) (count <= the scratch's size): item i
 * is data[offsets[i]:offsets[i + 1]]. Returns how many the kernel took (it
 * may take fewer: resume from there), or -1 with errno set for the first
 * one. Never SIGPIPE: a closed peer is an error. Called without the GIL. */
static Py_ssize_t tempo_sendmmsg(int fd, const char *data, const int64_t *offsets,
                                 Py_ssize_t count, int flags, void *scratch) {
    struct mmsghdr *msgs = scratch;
    struct iovec *iov = (struct iovec *)(msgs + count);
    for (Py_ssize_t i = 0; i < count; i++) {
        iov[i].iov_base = (void *)(data + offsets[i]);
        iov[i].iov_len = (size_t)(offsets[i + 1] - offsets[i]);
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    return (Py_ssize_t)sendmmsg(fd, msgs, (unsigned int)count, flags | MSG_NOSIGNAL);
}

#endif /* TEMPO_DATAGRAM_H */
