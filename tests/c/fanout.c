/*
 * fanout epoll|select N IP PORT — N non-blocking connections at once to a TCP echo server,
 * driven by one event loop: edge-triggered epoll (half of the sockets registered before their
 * connect, half after it), or select(). Each socket, once writable, must have SO_ERROR 0; it
 * sends a line and reads it back. Prints "N/N echoed in S s" (the wall time of the whole fan
 * out) and the process's CPU time.
 *
 * fanout sndtimeo MS IP PORT — a blocking connect with SO_SNDTIMEO MS milliseconds: prints its
 *   result and how long it took (through a proxy that is slow to answer, EINPROGRESS at MS);
 *   then waits for the socket to be writable and prints SO_ERROR and an echo.
 * fanout highselect IP PORT — a non-blocking connect on descriptor 1500, waited for with select()
 *   on sets sized for it (more than FD_SETSIZE descriptors), beside a pipe at 2000 that never
 *   gets data: prints what select reports, then the echo.
 * fanout refused IP PORT — a non-blocking connect to a destination that refuses: prints the
 *   SO_ERROR that poll's readiness brings, then what a second connect says.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX 256

static struct sockaddr_in target;
static int fds[MAX], state[MAX]; /* 0 connecting, 1 sent, 2 done, 3 failed */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int nb_socket(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0) {
        perror("socket");
        exit(2);
    }
    return s;
}

static void start_fd(int fd)
{
    int r = connect(fd, (struct sockaddr *)&target, sizeof target);
    if (r == 0 || errno != EINPROGRESS)
        fprintf(stderr, "connect: %d %s\n", r, strerror(errno));
}

static void start(int i)
{
    int r = connect(fds[i], (struct sockaddr *)&target, sizeof target);
    if (r == 0 || errno != EINPROGRESS) {
        fprintf(stderr, "connect %d: %d %s\n", i, r, strerror(errno));
        state[i] = 3;
    }
}

/* The socket became writable (state 0) or readable (state 1). */
static void advance(int i)
{
    char line[32], buf[64];
    snprintf(line, sizeof line, "hello %d\n", i);
    if (state[i] == 0) {
        int err = -1;
        socklen_t len = sizeof err;
        getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            fprintf(stderr, "socket %d: SO_ERROR %s\n", i, strerror(err));
            state[i] = 3;
            return;
        }
        if (send(fds[i], line, strlen(line), MSG_NOSIGNAL) != (ssize_t)strlen(line)) {
            fprintf(stderr, "send %d: %s\n", i, strerror(errno));
            state[i] = 3;
            return;
        }
        state[i] = 1;
    } else if (state[i] == 1) {
        ssize_t n = recv(fds[i], buf, sizeof buf - 1, 0);
        if (n < 0 && errno == EAGAIN)
            return;
        buf[n > 0 ? n : 0] = 0;
        state[i] = (n > 0 && !strcmp(buf, line)) ? 2 : 3;
        if (state[i] == 3)
            fprintf(stderr, "echo %d: got %zd \"%s\"\n", i, n, buf);
    }
}

static int finished(int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += state[i] >= 2;
    return k == n;
}

static void report(int n, double t0)
{
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += state[i] == 2;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("%d/%d echoed in %.2f s, cpu %.3f s\n", ok, n, now() - t0, cpu);
}

static int run_epoll(int n)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    double t0 = now();
    for (int i = 0; i < n; i++) {
        fds[i] = nb_socket();
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = i};
        if (i % 2 == 0) {
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev); /* before the connect */
            start(i);
        } else {
            start(i);
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev); /* after it */
        }
    }
    while (!finished(n) && now() - t0 < 30) {
        struct epoll_event evs[64];
        int k = epoll_wait(ep, evs, 64, 1000);
        for (int j = 0; j < k; j++) {
            int i = evs[j].data.u32;
            /* Edge-triggered: do all that can be done now. */
            int before;
            do {
                before = state[i];
                advance(i);
            } while (state[i] != before && state[i] < 2);
        }
    }
    report(n, t0);
    return 0;
}

static int run_select(int n)
{
    double t0 = now();
    for (int i = 0; i < n; i++) {
        fds[i] = nb_socket();
        start(i);
    }
    while (!finished(n) && now() - t0 < 30) {
        fd_set r, w;
        FD_ZERO(&r);
        FD_ZERO(&w);
        int top = 0;
        for (int i = 0; i < n; i++) {
            if (state[i] == 0)
                FD_SET(fds[i], &w);
            else if (state[i] == 1)
                FD_SET(fds[i], &r);
            if (fds[i] > top)
                top = fds[i];
        }
        struct timeval tv = {1, 0};
        if (select(top + 1, &r, &w, NULL, &tv) < 0) {
            perror("select");
            return 1;
        }
        for (int i = 0; i < n; i++)
            if ((state[i] == 0 && FD_ISSET(fds[i], &w)) || (state[i] == 1 && FD_ISSET(fds[i], &r)))
                advance(i);
    }
    report(n, t0);
    return 0;
}

static const char *name(int e)
{
    return e ? strerrorname_np(e) : "0";
}

/* One line sent on the connected socket `s` and read back: prints whether it was. */
static int echo_once(int s)
{
    fds[0] = s;
    state[0] = 1;
    send(s, "hello 0\n", 8, MSG_NOSIGNAL);
    struct pollfd q = {s, POLLIN, 0};
    poll(&q, 1, 5000);
    advance(0);
    printf("echo: %s\n", state[0] == 2 ? "yes" : "no");
    return 0;
}

static int run_sndtimeo(int ms)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    double t0 = now();
    int r = connect(s, (struct sockaddr *)&target, sizeof target);
    int e = errno;
    printf("connect: %d %s after %s\n", r, r ? name(e) : "", now() - t0 < ms / 1000.0 + 0.15 ? "the timeout" : "too long");
    struct pollfd p = {s, POLLOUT, 0};
    poll(&p, 1, 10000);
    int err = -1;
    socklen_t len = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("so_error: %s\n", name(err));
    return echo_once(s);
}

static int run_refused(void)
{
    int s = nb_socket();
    int r = connect(s, (struct sockaddr *)&target, sizeof target);
    printf("connect: %d %s\n", r, r ? name(errno) : "");
    struct pollfd p = {s, POLLOUT, 0};
    int k = poll(&p, 1, 10000);
    printf("poll: %d%s\n", k, k == 1 && (p.revents & POLLOUT) ? " POLLOUT" : "");
    int err = -1;
    socklen_t len = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("so_error: %s\n", name(err));
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("so_error again: %s\n", name(err));
    return 0;
}

static int run_highselect(void)
{
    struct rlimit rl = {4096, 4096};
    setrlimit(RLIMIT_NOFILE, &rl);
    int s = nb_socket(), p[2];
    dup2(s, 1500);
    close(s);
    s = 1500;
    if (pipe(p))
        return 2;
    dup2(p[0], 2000);
    start_fd(s);
    size_t words = (2001 + 63) / 64;
    unsigned long *r = calloc(words, 8), *w = calloc(words, 8);
    r[2000 / 64] |= 1UL << (2000 % 64);
    w[1500 / 64] |= 1UL << (1500 % 64);
    struct timeval tv = {10, 0};
    int k = select(2001, (fd_set *)r, (fd_set *)w, NULL, &tv);
    int wr = (w[1500 / 64] >> (1500 % 64)) & 1, rd = (r[2000 / 64] >> (2000 % 64)) & 1;
    int err = -1;
    socklen_t len = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("select: %d, socket writable %d, pipe readable %d, so_error %s\n", k, wr, rd, name(err));
    return echo_once(s);
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 4)
        return 2;
    const char *ip = argv[argc - 2], *port = argv[argc - 1];
    target.sin_family = AF_INET;
    target.sin_port = htons(atoi(port));
    inet_pton(AF_INET, ip, &target.sin_addr);
    if (!strcmp(argv[1], "epoll"))
        return run_epoll(atoi(argv[2]) > MAX ? MAX : atoi(argv[2]));
    if (!strcmp(argv[1], "select"))
        return run_select(atoi(argv[2]) > MAX ? MAX : atoi(argv[2]));
    if (!strcmp(argv[1], "sndtimeo"))
        return run_sndtimeo(atoi(argv[2]));
    if (!strcmp(argv[1], "refused"))
        return run_refused();
    if (!strcmp(argv[1], "highselect"))
        return run_highselect();
    return 2;
}
