/* A constant-rate HTTP/1.1 load driver whose latencies are free of coordinated omission (as
 * wrk2's): request k is due at start + k / RATE, on connection k % CONNECTIONS, and its latency
 * is measured from when it was due, not from when it could be sent. A proxy that stalls is
 * charged for every request that fell due during the stall, as its users would be. Requests due
 * before the end are answered after it (up to 2 s more); one still unanswered then is "late" and
 * counts with the time it had waited (a lower bound).
 *
 *   rate_driver PORT PATH RATE SECONDS CONNECTIONS
 *
 * prints one line of "name value" pairs: requests (answered), late (due and unanswered at the end),
 * errors (non-2xx, resets), rate (answered per second, to the last answer), p50 p90 p99 p999 max (microseconds, over
 * the answered and the late).
 * One thread, epoll, a timerfd armed for the next due request: compiled by bench/tail.py with
 * the machine's C compiler (cc -O2), so nothing is downloaded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define BUFFER 65536
#define DRAIN 2.0 /* seconds after the end to answer what fell due before it */

typedef struct {
    int fd;
    int busy;              /* a request is in flight */
    uint64_t next;         /* the connection's next request: k = next * connections + index */
    double sent_due;       /* when the request in flight was due */
    char buf[BUFFER];
    size_t have;
} Conn;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int open_conn(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    int one = 1;
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("rate_driver: connect");
        exit(2);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int by_value(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* A complete response in c->buf: its length, else 0 (more to read); -1 when unframed. */
static long response_length(Conn *c, int *ok) {
    char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
    long body = 0;
    if (end == NULL) return c->have >= BUFFER ? -1 : 0;
    *ok = c->have >= 12 && c->buf[9] == '2';
    for (char *line = memchr(c->buf, '\n', end - c->buf); line != NULL && line < end;
         line = memchr(line + 1, '\n', end - line - 1)) {
        if (strncasecmp(line + 1, "content-length:", 15) == 0) body = strtol(line + 16, NULL, 10);
    }
    long total = (end - c->buf) + 4 + body;
    if (total > BUFFER) return -1;
    return (long)c->have >= total ? total : 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: rate_driver PORT PATH RATE SECONDS CONNECTIONS\n");
        return 2;
    }
    int port = atoi(argv[1]);
    const char *path = argv[2];
    double rate = atof(argv[3]), seconds = atof(argv[4]);
    int n = atoi(argv[5]);
    char request[1024];
    int request_len = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", path);
    size_t cap = (size_t)(rate * seconds) + 16 * (size_t)n + 1024, count = 0;
    uint32_t *latency = malloc(cap * sizeof *latency);
    Conn *conns = calloc(n, sizeof *conns);
    int ep = epoll_create1(0), timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    long errors = 0;
    struct epoll_event ev = {.events = EPOLLIN}, events[256];
    if (!latency || !conns || ep < 0 || timer < 0) return 2;
    ev.data.u32 = (uint32_t)n;
    epoll_ctl(ep, EPOLL_CTL_ADD, timer, &ev);
    for (int i = 0; i < n; i++) {
        conns[i].fd = open_conn(port);
        ev.data.u32 = (uint32_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    double start = now_s() + 0.01, end = start + seconds, last_done = end;
#define DUE(i) (start + ((double)conns[i].next * n + (i)) / rate)
    for (;;) {
        /* Until the end, then until what fell due before it is answered (at most DRAIN s more). */
        double now = now_s(), earliest = end + DRAIN;
        int pending = 0;
        if (now >= end + DRAIN) break;
        for (int i = 0; i < n; i++) { /* send what is due on idle connections */
            Conn *c = &conns[i];
            if (c->fd < 0) continue;
            double due = DUE(i);
            pending |= c->busy || due < end;
            if (c->busy || due >= end) continue;
            if (due <= now) {
                if (write(c->fd, request, request_len) != request_len) { /* a fresh request fits */
                    errors++;
                    close(c->fd);
                    c->fd = -1;
                    continue;
                }
                c->busy = 1;
                c->sent_due = due;
                c->next++;
            } else if (due < earliest) {
                earliest = due;
            }
        }
        if (!pending && now >= end) break;
        struct itimerspec at = {0};
        at.it_value.tv_sec = (time_t)earliest;
        at.it_value.tv_nsec = (long)((earliest - (double)(time_t)earliest) * 1e9);
        timerfd_settime(timer, TFD_TIMER_ABSTIME, &at, NULL);
        int ready = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < ready; e++) {
            uint32_t i = events[e].data.u32;
            if (i == (uint32_t)n) {
                uint64_t ticks;
                if (read(timer, &ticks, sizeof ticks) < 0) { /* nothing: spurious */ }
                continue;
            }
            Conn *c = &conns[i];
            ssize_t got = read(c->fd, c->buf + c->have, BUFFER - c->have);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->busy = 0;
                continue;
            }
            c->have += got;
            int ok = 0;
            long len = response_length(c, &ok);
            if (len < 0) {
                fprintf(stderr, "rate_driver: a response without Content-Length or over %d bytes\n", BUFFER);
                return 2;
            }
            if (len == 0) continue;
            double done = last_done = now_s();
            if (!ok) errors++;
            if (count < cap) latency[count++] = (uint32_t)((done - c->sent_due) * 1e6);
            memmove(c->buf, c->buf + len, c->have - len);
            c->have -= len;
            c->busy = 0;
        }
    }
    /* Still unanswered after the drain (or on a closed connection): waited at least until now. */
    double stop = now_s();
    size_t answered = count;
    long late = 0;
    for (int i = 0; i < n; i++) {
        Conn *c = &conns[i];
        if (c->busy && count < cap) latency[count++] = (uint32_t)((stop - c->sent_due) * 1e6), late++;
        for (; DUE(i) < end && count < cap; c->next++) latency[count++] = (uint32_t)((stop - DUE(i)) * 1e6), late++;
    }
    qsort(latency, count, sizeof *latency, by_value);
#define AT(q) (count ? latency[(size_t)((q) * (count - 1))] : 0)
    printf("requests %zu late %ld errors %ld rate %.1f p50 %u p90 %u p99 %u p999 %u max %u\n", answered, late,
           errors, answered / (last_done > end ? last_done - start : seconds), AT(0.5), AT(0.9), AT(0.99), AT(0.999), count ? latency[count - 1] : 0);
    return 0;
}
