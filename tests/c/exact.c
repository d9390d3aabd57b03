/*
 * exact CASE IP PORT — one socket behaviour that must look under socksify exactly as it does
 * without it. IP:PORT is a TCP echo server (under socksify: reached through the proxy). Prints
 * one line per step: the call's result and errno name, or the data echoed. The same program run
 * without socksify is the reference.
 *
 * Cases:
 *   second-connect    connect, echo, connect again (same and another destination), echo
 *   direct-then-proxy connect to a loopback listener of our own, then to IP:PORT, then talk
 *                     on the loopback connection
 *   bad-address       connect with an address at 0x10, and with one that ends past its page
 *   unspecified       connect to 0.0.0.0, :: and ::ffff:0.0.0.0 at a port we listen on
 *   fastopen-mmsg     sendmmsg of two messages with MSG_FASTOPEN to IP:PORT, then the echo
 *   cancel            pthread_cancel of threads blocked in recvfrom with an address: on an
 *                     AF_UNIX datagram socket, and on a UDP socket that sent to loopback first
 *                     (calls the library makes through the kernel guard's gate)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;

static void report(const char *what, long r)
{
    printf("%s: %ld %s\n", what, r, r < 0 ? strerrorname_np(errno) : "");
    fflush(stdout);
}

/* Sends `msg` on `s` and prints the `want` bytes that come back (within 5 s). */
static void echo_n(int s, const char *msg, size_t want)
{
    char buf[64];
    size_t got = 0;
    if (send(s, msg, strlen(msg), MSG_NOSIGNAL) != (ssize_t)strlen(msg)) {
        report("send", -1);
        return;
    }
    while (got < want) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 5000) != 1)
            break;
        ssize_t n = recv(s, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0)
            break;
        got += n;
    }
    buf[got] = 0;
    printf("echo: %s\n", buf);
    fflush(stdout);
}

static void echo(int s, const char *msg)
{
    echo_n(s, msg, strlen(msg));
}

static int tcp(int family)
{
    int s = socket(family, SOCK_STREAM, 0);
    if (s < 0) {
        perror("socket");
        exit(2);
    }
    return s;
}

/* A listener on `addr` (a wildcard or loopback address of `family`), its port in *port. */
static int listener(int family, const char *addr, int *port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int s = tcp(family), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, addr, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, addr, &a->sin6_addr);
        len = sizeof *a;
    }
    if (bind(s, (struct sockaddr *)&ss, len) || listen(s, 8) || getsockname(s, (struct sockaddr *)&ss, &len)) {
        perror("listener");
        exit(2);
    }
    *port = ntohs(((struct sockaddr_in *)&ss)->sin_port); /* same offset in both families */
    return s;
}

static void second_connect(void)
{
    int s = tcp(AF_INET);
    struct sockaddr_in other = target;
    other.sin_port = htons(ntohs(target.sin_port) + 1);
    report("connect", connect(s, (struct sockaddr *)&target, sizeof target));
    echo(s, "one");
    report("connect again", connect(s, (struct sockaddr *)&target, sizeof target));
    report("connect elsewhere", connect(s, (struct sockaddr *)&other, sizeof other));
    echo(s, "two");
    int err = -1;
    socklen_t len = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("so_error: %d\n", err);
}

static void direct_then_proxy(void)
{
    int port;
    int l = listener(AF_INET, "127.0.0.1", &port);
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_port = htons(port)};
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = tcp(AF_INET);
    report("connect loopback", connect(s, (struct sockaddr *)&lo, sizeof lo));
    int a = accept(l, NULL, NULL);
    report("connect proxied", connect(s, (struct sockaddr *)&target, sizeof target));
    send(s, "still here", 10, 0);
    char buf[32] = {0};
    ssize_t n = recv(a, buf, sizeof buf - 1, 0);
    printf("loopback peer got %zd: %s\n", n, buf);
}

static void bad_address(void)
{
    int s = tcp(AF_INET);
    report("connect 0x10", connect(s, (struct sockaddr *)0x10, 16));
    long page = sysconf(_SC_PAGESIZE);
    char *two = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(two + page, page, PROT_NONE);
    /* The family, port and address readable, the rest of the 16 bytes past the page. */
    struct sockaddr_in *edge = (struct sockaddr_in *)(two + page - 8);
    memcpy(edge, &target, 8);
    report("connect at the end of a page", connect(s, (struct sockaddr *)edge, sizeof target));
    /* The whole address readable, ending exactly at the page's end: a real connect. */
    struct sockaddr_in *fits = (struct sockaddr_in *)(two + page - sizeof target);
    memcpy(fits, &target, sizeof target);
    report("connect ending at the page's end", connect(s, (struct sockaddr *)fits, sizeof target));
    echo(s, "fits");
    int u = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 *edge6 = (struct sockaddr_in6 *)(two + page - 12);
    memset(edge6, 0, 12);
    edge6->sin6_family = AF_INET6;
    report("connect6 at the end of a page", connect(u, (struct sockaddr *)edge6, sizeof *edge6));
}

static void unspecified(void)
{
    const char *dests[] = {"0.0.0.0", "::", "::ffff:0.0.0.0"};
    for (int i = 0; i < 3; i++) {
        int port, family = i == 0 ? AF_INET : AF_INET6;
        int l = listener(family, i == 0 ? "0.0.0.0" : "::", &port);
        struct sockaddr_storage ss = {0};
        socklen_t len;
        if (family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            a->sin_family = AF_INET;
            a->sin_port = htons(port);
            inet_pton(AF_INET, dests[i], &a->sin_addr);
            len = sizeof *a;
        } else {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            a->sin6_family = AF_INET6;
            a->sin6_port = htons(port);
            inet_pton(AF_INET6, dests[i], &a->sin6_addr);
            len = sizeof *a;
        }
        int s = tcp(family);
        char what[64];
        snprintf(what, sizeof what, "connect %s", dests[i]);
        report(what, connect(s, (struct sockaddr *)&ss, len));
        struct pollfd p = {l, POLLIN, 0};
        int a = poll(&p, 1, 3000) == 1 ? accept(l, NULL, NULL) : -1;
        send(s, "local", 5, 0);
        char buf[16] = {0};
        ssize_t n = a >= 0 ? recv(a, buf, sizeof buf - 1, 0) : -1;
        printf("accepted %s: %zd %s\n", a >= 0 ? "yes" : "no", n, buf);
        close(s);
        close(a);
        close(l);
    }
}

static void fastopen_mmsg(void)
{
    int s = tcp(AF_INET);
    struct iovec iov[2] = {{"first ", 6}, {"second", 6}};
    struct mmsghdr m[2];
    memset(m, 0, sizeof m);
    for (int i = 0; i < 2; i++) {
        m[i].msg_hdr.msg_name = &target;
        m[i].msg_hdr.msg_namelen = sizeof target;
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    int r = sendmmsg(s, m, 2, MSG_FASTOPEN);
    report("sendmmsg", r);
    printf("lengths: %u %u\n", m[0].msg_len, r > 1 ? m[1].msg_len : 0);
    echo_n(s, "!", (r > 0 ? m[0].msg_len : 0) + (r > 1 ? m[1].msg_len : 0) + 1);
}

static void *blocked_recvfrom(void *arg)
{
    char buf[64];
    struct sockaddr_storage from;
    socklen_t len = sizeof from;
    recvfrom(*(int *)arg, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
    return NULL;
}

/* Cancels a thread blocked in recvfrom on `s`: prints whether it ended, as cancelled. */
static void cancel_on(const char *what, int s)
{
    pthread_t t;
    pthread_create(&t, NULL, blocked_recvfrom, &s);
    usleep(300 * 1000);
    pthread_cancel(t);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 3;
    void *ret = NULL;
    int r = pthread_timedjoin_np(t, &ret, &until);
    printf("%s: %s\n", what, r ? strerrorname_np(r) : ret == PTHREAD_CANCELED ? "cancelled" : "returned");
    fflush(stdout);
}

static void cancel(void)
{
    int u = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un un = {AF_UNIX, ""};
    snprintf(un.sun_path + 1, sizeof un.sun_path - 1, "socksify-exact-%d", getpid());
    bind(u, (struct sockaddr *)&un, sizeof un);
    cancel_on("AF_UNIX recvfrom", u);
    int d = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in lo = {0};
    lo.sin_family = AF_INET;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lo.sin_port = htons(9);
    report("sendto loopback", sendto(d, "x", 1, 0, (struct sockaddr *)&lo, sizeof lo));
    cancel_on("UDP recvfrom", d);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: exact CASE IP PORT\n");
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons(atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &target.sin_addr);
    if (!strcmp(argv[1], "second-connect"))
        second_connect();
    else if (!strcmp(argv[1], "direct-then-proxy"))
        direct_then_proxy();
    else if (!strcmp(argv[1], "bad-address"))
        bad_address();
    else if (!strcmp(argv[1], "unspecified"))
        unspecified();
    else if (!strcmp(argv[1], "fastopen-mmsg"))
        fastopen_mmsg();
    else if (!strcmp(argv[1], "cancel"))
        cancel();
    else {
        fprintf(stderr, "exact: unknown case %s\n", argv[1]);
        return 2;
    }
    return 0;
}
