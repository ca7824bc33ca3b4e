/* The sendmmsg(2) floor: what C pays per datagram on the socket setup that
 * `tempo bench --zerocopy` gives Batch.sendmmsg (tempo/tools/_zerocopy.py).
 *
 *     sendmmsg_floor PORT COUNT SIZE ROUNDS
 *
 * Connects a UDP socket to 127.0.0.1:PORT, lays COUNT datagrams of SIZE
 * bytes out back to back in one buffer (as a batch lies in tempo's arena),
 * and sends them all ROUNDS times, 1024 per sendmmsg() call, resuming after
 * partial sends. Prints one line per round: nanoseconds per datagram. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 1024

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PORT COUNT SIZE ROUNDS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long count = atol(argv[2]), size = atol(argv[3]), rounds = atol(argv[4]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        perror("socket");
        return 1;
    }
    char *data = malloc((size_t)(count * size));
    struct mmsghdr *msgs = calloc(CHUNK, sizeof *msgs);
    struct iovec *iov = calloc(CHUNK, sizeof *iov);
    if (!data || !msgs || !iov) return 1;
    memset(data, 'x', (size_t)(count * size));
    for (long r = 0; r < rounds; r++) {
        double start = now();
        long sent = 0;
        while (sent < count) {
            long n = count - sent < CHUNK ? count - sent : CHUNK;
            for (long i = 0; i < n; i++) {
                iov[i].iov_base = data + (sent + i) * size;
                iov[i].iov_len = (size_t)size;
                memset(&msgs[i], 0, sizeof msgs[i]);
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int k = sendmmsg(fd, msgs, (unsigned int)n, MSG_NOSIGNAL);
            if (k < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                perror("sendmmsg");
                return 1;
            }
            sent += k;
        }
        printf("%.1f\n", (now() - start) / (double)count);
    }
    return 0;
}
