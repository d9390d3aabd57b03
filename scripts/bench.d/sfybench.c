/*
 * sfybench.c — the measuring program of scripts/bench (socksify's benchmark).
 *
 *   sfybench tcp    (-a IP | -H NAME) -p PORT [-n N] [-t THREADS] [-s SIZE] [-W WARM]
 *       "plain" client: per connection socket + connect (to the address, or to the
 *       first getaddrinfo() answer for NAME, looked up again for every connection)
 *       + write SIZE bytes + read them back + check them + close.
 *   sfybench socks5 (-a IP | -H NAME) -p PORT -x PROXY_IP [-P PROXY_PORT] [...]
 *       the floor: the same round trip through a hand-written SOCKS5 client (no
 *       auth; CONNECT with ATYP IPv4/IPv6, or ATYP domain for NAME: no local lookup).
 *   sfybench bulk   -a IP -p PORT [-n N] [-W WARM]
 *       bulk data: one connection, then per operation 16 KiB written and read back
 *       (checked); us_per_op is per 16 KiB chunk.
 *   sfybench bulk-socks5 -a IP -p PORT -x PROXY_IP [-P PROXY_PORT] [...]
 *       the bulk floor: the same through a hand-written SOCKS5 CONNECT.
 *   sfybench udp    -a IP -p PORT [-n N] [-s SIZE] [-W WARM]
 *       one UDP socket; per datagram sendto(target) + recvfrom + check.
 *   sfybench udp-socks5 -a IP -p PORT -x PROXY_IP [-P PROXY_PORT] [...]
 *       the UDP floor: UDP ASSOCIATE on a control connection, then per datagram
 *       sendto(relay, RFC 1928 header + data) + recvfrom + check header and data.
 *   sfybench pipe   -a IP -p PORT [-n N] [-W WARM]
 *       a program that holds a TCP connection to the target and a UDP socket that
 *       sent it one datagram (under socksify: a proxied connection and a UDP
 *       association), then per operation write(1 byte) + read(1 byte) on a pipe:
 *       what the library costs descriptors it has nothing to do with.
 *   sfybench local [-n N] [-W WARM] KIND
 *       calls socksify never proxies, per operation: KIND unix (sendmsg of 64 bytes on
 *       an AF_UNIX datagram socketpair + recv), unix-rights (the same carrying one
 *       descriptor with SCM_RIGHTS, received with recvmsg and closed), udp-lo
 *       (sendto 127.0.0.1 + recvfrom with an address, as statsd or a local resolver),
 *       pipe (write + read of a pipe, no hook).
 *   sfybench spawn  [-n N] [-W WARM] -- COMMAND ARGS...
 *       posix_spawnp + waitpid N times (the exec-overhead fallback when hyperfine
 *       is missing); the command must exit 0.
 *   sfybench echod  -p PORT -l ADDR [-l ADDR...]
 *       TCP + UDP echo server (single-threaded epoll). On a TCP client's EOF it
 *       closes with SO_LINGER 0 (RST), so that neither the proxies' outgoing
 *       sockets nor the clients pile up TIME_WAIT sockets during long runs.
 *
 * The client modes do WARM operations first (not timed), then N timed ones
 * (shared by THREADS threads for tcp/socks5), and print one line:
 *   ok=N fail=F threads=T secs=S us_per_op=U cpu_us_per_op=C
 * where C is this process's user+system CPU time (all threads, including any
 * preloaded library's work) per timed operation; for spawn it is the children's. Every echo is compared byte for byte with what was sent
 * (the payload carries the operation number); the exit status is 0 only if every
 * operation succeeded. The first errors are printed to stderr.
 *
 * Socket timeouts: TCP modes set none (the caller bounds the run with timeout(1),
 * so the measured loop has no extra setsockopt calls); UDP modes set SO_RCVTIMEO
 * once per socket (a lost datagram counts as a failure, not a hang).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_SIZE 4096
#define UDP_TIMEOUT_MS 2000

static long g_n = 2000;
static int g_threads = 1;
static int g_size = 32;
static long g_warm = 50;
static const char *g_ip;      /* -a */
static const char *g_name;    /* -H */
static int g_port = -1;       /* -p */
static const char *g_pip;     /* -x */
static int g_pport = 1080;    /* -P */
static char g_portstr[16];

static struct sockaddr_storage g_target;
static socklen_t g_target_len;
static struct sockaddr_storage g_proxy;
static socklen_t g_proxy_len;

static atomic_long g_next;
static atomic_long g_ok;
static atomic_long g_fail;
static atomic_int g_errors_shown;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sfybench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* Prints an error of operation `op` (op < 0: the setup), the first few only.
 * Always returns -1. */
static int report(long op, const char *fmt, ...)
{
    if (atomic_fetch_add(&g_errors_shown, 1) >= 5)
        return -1;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (op >= 0)
        fprintf(stderr, "sfybench: op %ld: %s\n", op, msg);
    else
        fprintf(stderr, "sfybench: %s\n", msg);
    return -1;
}

static int failed(long op, const char *what, int err)
{
    return report(op, "%s: %s", what, err ? strerror(err) : "protocol error");
}

static double cpu_s(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Payload of operation `op`: differs per operation, so a stale or misrouted echo
 * never passes the check. */
static void fill(unsigned char *buf, int len, long op)
{
    for (int k = 0; k < len; k++)
        buf[k] = (unsigned char)(op * 131 + k * 7 + 1);
    if (len >= 8)
        memcpy(buf, &op, sizeof op < 8 ? sizeof op : 8);
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads exactly len bytes; an early EOF is an error (ECONNRESET). */
static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = ECONNRESET;
            return -1;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

static int parse_ip(const char *s, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof *s4;
        return 0;
    }
    if (inet_pton(AF_INET6, s, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
        return 0;
    }
    return -1;
}

/* The echo round trip on a connected stream socket. */
static int echo_tcp(int fd, long op)
{
    unsigned char out[MAX_SIZE], in[MAX_SIZE];
    fill(out, g_size, op);
    if (write_all(fd, out, (size_t)g_size) < 0)
        return failed(op, "write", errno);
    if (read_full(fd, in, (size_t)g_size) < 0)
        return failed(op, "read echo", errno);
    if (memcmp(in, out, (size_t)g_size) != 0)
        return failed(op, "echo differs from what was sent", 0);
    return 0;
}

/* ------------------------------------------------------------------ plain TCP */

static int op_tcp(long op)
{
    const struct sockaddr *sa = (const struct sockaddr *)&g_target;
    socklen_t salen = g_target_len;
    struct addrinfo *res = NULL;
    if (g_name) {
        struct addrinfo hints = {0};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo(g_name, g_portstr, &hints, &res);
        if (rc != 0) {
            return report(op, "getaddrinfo(%s): %s", g_name, gai_strerror(rc));
        }
        sa = res->ai_addr;
        salen = res->ai_addrlen;
    }
    int fd = socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0) {
        if (res)
            freeaddrinfo(res);
        return failed(op, "socket", errno);
    }
    int rc = connect(fd, sa, salen);
    int err = errno;
    if (res)
        freeaddrinfo(res);
    if (rc < 0) {
        close(fd);
        return failed(op, "connect", err);
    }
    rc = echo_tcp(fd, op);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------ SOCKS5 floor */

/* Reads a SOCKS5 reply (VER REP RSV ATYP BND.ADDR BND.PORT) into rep (>= 262
 * bytes); returns its length. The echo target never speaks first, so nothing
 * can follow the reply before we send: one read() normally returns the whole
 * reply (10 bytes for ATYP IPv4); we loop until the length the reply itself
 * announces is complete, and treat extra bytes as a protocol error. */
static int read_socks5_reply(int fd, unsigned char *rep, long op, const char *what)
{
    size_t got = 0, need = 5;
    while (got < need) {
        ssize_t r = read(fd, rep + got, 262 - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return failed(op, what, errno);
        }
        if (r == 0)
            return failed(op, what, ECONNRESET);
        got += (size_t)r;
        if (got >= 5) {
            if (rep[0] != 5)
                return report(op, "%s: version %u", what, rep[0]);
            if (rep[1] != 0)
                return report(op, "%s: SOCKS5 reply code 0x%02x", what, rep[1]);
            switch (rep[3]) {
            case 1: need = 4 + 4 + 2; break;
            case 4: need = 4 + 16 + 2; break;
            case 3: need = 4 + 1 + (size_t)rep[4] + 2; break;
            default:
                return report(op, "%s: ATYP %u", what, rep[3]);
            }
        }
    }
    if (got != need)
        return failed(op, "bytes after the SOCKS5 reply", 0);
    return (int)got;
}

/* Connects to the proxy and sends the no-auth greeting with `req` (a request, or
 * nothing) in one write, as a hand-written client does: one round trip. Reads the
 * method selection; the caller reads the request's reply. Returns the fd or -1. */
static int socks5_open_with(long op, const unsigned char *req, size_t req_len)
{
    int fd = socket(g_proxy.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return failed(op, "socket", errno);
    if (connect(fd, (struct sockaddr *)&g_proxy, g_proxy_len) < 0) {
        int e = errno;
        close(fd);
        return failed(op, "connect to the proxy", e);
    }
    unsigned char msg[3 + 4 + 1 + 255 + 2] = {5, 1, 0};
    if (req_len)
        memcpy(msg + 3, req, req_len);
    unsigned char sel[2];
    if (write_all(fd, msg, 3 + req_len) < 0) {
        int e = errno;
        close(fd);
        return failed(op, "write greeting", e);
    }
    if (read_full(fd, sel, 2) < 0) {
        int e = errno;
        close(fd);
        return failed(op, "read method selection", e);
    }
    if (sel[0] != 5 || sel[1] != 0) {
        close(fd);
        return report(op, "method selection %u %u (wanted 5 0)", sel[0], sel[1]);
    }
    return fd;
}

/* The greeting alone (the request follows once the reply has come). */
static int socks5_open(long op)
{
    return socks5_open_with(op, NULL, 0);
}

/* Appends ATYP + DST.ADDR + DST.PORT for the target (or for `sa` if given). */
static size_t put_dest(unsigned char *p, const struct sockaddr_storage *sa, const char *name, int port)
{
    size_t n = 0;
    if (name) {
        size_t l = strlen(name);
        p[n++] = 3;
        p[n++] = (unsigned char)l;
        memcpy(p + n, name, l);
        n += l;
        p[n++] = (unsigned char)(port >> 8);
        p[n++] = (unsigned char)port;
    } else if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)sa;
        p[n++] = 1;
        memcpy(p + n, &s4->sin_addr, 4);
        n += 4;
        memcpy(p + n, &s4->sin_port, 2);
        n += 2;
    } else {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        p[n++] = 4;
        memcpy(p + n, &s6->sin6_addr, 16);
        n += 16;
        memcpy(p + n, &s6->sin6_port, 2);
        n += 2;
    }
    return n;
}

static int op_socks5(long op)
{
    /* Greeting and CONNECT in one write: the floor pays one round trip. */
    unsigned char req[4 + 1 + 255 + 2] = {5, 1, 0};
    size_t len = 3 + put_dest(req + 3, &g_target, g_name, g_port);
    int fd = socks5_open_with(op, req, len);
    if (fd < 0)
        return -1;
    unsigned char rep[262];
    if (read_socks5_reply(fd, rep, op, "CONNECT reply") < 0) {
        close(fd);
        return -1;
    }
    int rc = echo_tcp(fd, op);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------- threads */

typedef int (*op_fn)(long);
static op_fn g_op;

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        long i = atomic_fetch_add(&g_next, 1);
        if (i >= g_n)
            break;
        if (g_op(g_warm + i) == 0)
            atomic_fetch_add(&g_ok, 1);
        else
            atomic_fetch_add(&g_fail, 1);
    }
    return NULL;
}

static int run_tcp_like(op_fn op)
{
    g_op = op;
    for (long i = 0; i < g_warm; i++)
        if (op(i) < 0)
            die("warm-up operation %ld failed", i);
    double c0 = cpu_s(RUSAGE_SELF);
    double t0 = now_s();
    if (g_threads <= 1) {
        worker(NULL);
    } else {
        pthread_t th[256];
        for (int i = 0; i < g_threads; i++)
            if (pthread_create(&th[i], NULL, worker, NULL) != 0)
                die("pthread_create failed");
        for (int i = 0; i < g_threads; i++)
            pthread_join(th[i], NULL);
    }
    double secs = now_s() - t0;
    double cpu = cpu_s(RUSAGE_SELF) - c0;
    long ok = atomic_load(&g_ok), fail = atomic_load(&g_fail);
    printf("ok=%ld fail=%ld threads=%d secs=%.6f us_per_op=%.3f cpu_us_per_op=%.3f\n", ok, fail, g_threads, secs,
           secs * 1e6 / (double)g_n, cpu * 1e6 / (double)g_n);
    return fail == 0 && ok == g_n ? 0 : 1;
}

/* ------------------------------------------------------------------ bulk */

#define BULK_CHUNK 16384

/* One connection (plain, or through the floor's SOCKS5 CONNECT), then N chunks echoed. */
static int run_bulk(int socks)
{
    int fd;
    if (socks) {
        fd = socks5_open(0);
        if (fd < 0)
            die("cannot reach the proxy");
        unsigned char req[4 + 1 + 255 + 2] = {5, 1, 0};
        size_t len = 3 + put_dest(req + 3, &g_target, NULL, g_port);
        unsigned char rep[262];
        if (write_all(fd, req, len) < 0 || read_socks5_reply(fd, rep, 0, "CONNECT reply") < 0)
            die("CONNECT failed");
    } else {
        fd = socket(g_target.ss_family, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&g_target, g_target_len) < 0)
            die("connect: %s", strerror(errno));
    }
    static unsigned char out[BULK_CHUNK], in[BULK_CHUNK];
    long ok = 0, fail = 0;
    double c0 = 0, t0 = 0;
    for (long i = 0; i < g_warm + g_n; i++) {
        if (i == g_warm) {
            c0 = cpu_s(RUSAGE_SELF);
            t0 = now_s();
        }
        memset(out, (int)(i & 0xff), sizeof out);
        out[0] = (unsigned char)(i >> 8);
        if (write_all(fd, out, sizeof out) < 0 || read_full(fd, in, sizeof in) < 0 || memcmp(in, out, sizeof in)) {
            if (i >= g_warm)
                fail++;
            report(i, "bulk chunk %ld: %s", i, strerror(errno));
            break;
        }
        if (i >= g_warm)
            ok++;
    }
    double secs = now_s() - t0;
    double cpu = cpu_s(RUSAGE_SELF) - c0;
    close(fd);
    printf("ok=%ld fail=%ld threads=1 secs=%.6f us_per_op=%.3f cpu_us_per_op=%.3f\n", ok, g_n - ok, secs,
           secs * 1e6 / (double)g_n, cpu * 1e6 / (double)g_n);
    (void)fail;
    return ok == g_n ? 0 : 1;
}

/* ------------------------------------------------------------------ UDP */

static void set_rcvtimeo(int fd)
{
    struct timeval tv = {UDP_TIMEOUT_MS / 1000, (UDP_TIMEOUT_MS % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        die("setsockopt SO_RCVTIMEO: %s", strerror(errno));
}

static int sockaddr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

/* One datagram round trip. hdr/hlen: the RFC 1928 UDP header to put in front
 * (and expect back), or hlen 0 for plain UDP. */
static int udp_round_trip(int fd, const struct sockaddr_storage *to, socklen_t tolen, const unsigned char *hdr,
                          size_t hlen, long op)
{
    unsigned char out[MAX_SIZE + 300], in[MAX_SIZE + 300];
    memcpy(out, hdr, hlen);
    fill(out + hlen, g_size, op);
    size_t len = hlen + (size_t)g_size;
    if (sendto(fd, out, len, 0, (const struct sockaddr *)to, tolen) != (ssize_t)len)
        return failed(op, "sendto", errno);
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t r = recvfrom(fd, in, sizeof in, 0, (struct sockaddr *)&from, &fromlen);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return failed(op, errno == EAGAIN ? "recvfrom: no answer within the timeout" : "recvfrom", errno);
        }
        /* A late answer to an earlier (timed-out) datagram: skip it. */
        if ((size_t)r == len && sockaddr_eq(&from, to) && memcmp(in, out, hlen) == 0 &&
            memcmp(in + hlen, out + hlen, 8) != 0)
            continue;
        if (!sockaddr_eq(&from, to))
            return failed(op, "datagram from an unexpected address", 0);
        if ((size_t)r != len || memcmp(in, out, len) != 0)
            return failed(op, hlen ? "UDP header or echo differs" : "echo differs from what was sent", 0);
        return 0;
    }
}

static int run_udp_loop(int fd, const struct sockaddr_storage *to, socklen_t tolen, const unsigned char *hdr,
                        size_t hlen)
{
    for (long i = 0; i < g_warm; i++)
        if (udp_round_trip(fd, to, tolen, hdr, hlen, i) < 0)
            die("warm-up datagram %ld failed", i);
    long ok = 0, fail = 0;
    double c0 = cpu_s(RUSAGE_SELF);
    double t0 = now_s();
    for (long i = 0; i < g_n; i++) {
        if (udp_round_trip(fd, to, tolen, hdr, hlen, g_warm + i) == 0)
            ok++;
        else
            fail++;
    }
    double secs = now_s() - t0;
    double cpu = cpu_s(RUSAGE_SELF) - c0;
    printf("ok=%ld fail=%ld threads=1 secs=%.6f us_per_op=%.3f cpu_us_per_op=%.3f\n", ok, fail, secs,
           secs * 1e6 / (double)g_n, cpu * 1e6 / (double)g_n);
    return fail == 0 ? 0 : 1;
}

static int run_pipe(void)
{
    int tcp = socket(g_target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (tcp < 0 || connect(tcp, (struct sockaddr *)&g_target, g_target_len) < 0)
        die("connect: %s", strerror(errno));
    int udp = socket(g_target.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (udp < 0 || sendto(udp, "x", 1, 0, (struct sockaddr *)&g_target, g_target_len) != 1)
        die("sendto: %s", strerror(errno));
    int p[2];
    if (pipe(p) < 0)
        die("pipe: %s", strerror(errno));
    char c = 'x';
    long ok = 0;
    double t0 = 0, c0 = 0;
    for (long i = 0; i < g_warm + g_n; i++) {
        if (i == g_warm) {
            t0 = now_s();
            c0 = cpu_s(RUSAGE_SELF);
        }
        if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1)
            die("pipe: %s", strerror(errno));
        if (i >= g_warm)
            ok++;
    }
    double secs = now_s() - t0;
    double cpu = cpu_s(RUSAGE_SELF) - c0;
    printf("ok=%ld fail=0 threads=1 secs=%.6f us_per_op=%.4f cpu_us_per_op=%.4f\n", ok, secs,
           secs * 1e6 / (double)g_n, cpu * 1e6 / (double)g_n);
    close(tcp);
    close(udp);
    return 0;
}

/* One operation of `sfybench local KIND` on descriptors a, b (and spare, a descriptor to pass). */
static int local_op(const char *kind, int a, int b, int spare, struct sockaddr_in *to)
{
    char buf[64] = {0};
    if (strcmp(kind, "pipe") == 0)
        return write(a, buf, 1) == 1 && read(b, buf, 1) == 1 ? 0 : -1;
    if (strcmp(kind, "udp-lo") == 0) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        if (sendto(a, buf, sizeof buf, 0, (struct sockaddr *)to, sizeof *to) != sizeof buf)
            return -1;
        return recvfrom(a, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl) == sizeof buf ? 0 : -1;
    }
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } c;
    int rights = strcmp(kind, "unix-rights") == 0;
    if (rights) {
        memset(&c, 0, sizeof c);
        m.msg_control = c.space;
        m.msg_controllen = sizeof c.space;
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &spare, sizeof spare);
    }
    if (sendmsg(a, &m, 0) != sizeof buf)
        return -1;
    if (!rights)
        return recv(b, buf, sizeof buf, 0) == sizeof buf ? 0 : -1;
    m.msg_controllen = sizeof c.space;
    if (recvmsg(b, &m, 0) != sizeof buf)
        return -1;
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    if (!h || h->cmsg_type != SCM_RIGHTS)
        return -1;
    int got;
    memcpy(&got, CMSG_DATA(h), sizeof got);
    return close(got);
}

static int run_local(const char *kind)
{
    int a, b, spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct sockaddr_in to = {0};
    if (strcmp(kind, "pipe") == 0) {
        int p[2];
        if (pipe(p) < 0)
            die("pipe: %s", strerror(errno));
        a = p[1];
        b = p[0];
    } else if (strcmp(kind, "udp-lo") == 0) {
        /* One socket bound to loopback sends to itself. */
        a = b = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        to.sin_family = AF_INET;
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t tl = sizeof to;
        if (a < 0 || bind(a, (struct sockaddr *)&to, sizeof to) < 0 ||
            getsockname(a, (struct sockaddr *)&to, &tl) < 0)
            die("udp-lo: %s", strerror(errno));
    } else if (strcmp(kind, "unix") == 0 || strcmp(kind, "unix-rights") == 0) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0)
            die("socketpair: %s", strerror(errno));
        a = sv[0];
        b = sv[1];
    } else {
        die("local: unknown kind %s (unix, unix-rights, udp-lo, pipe)", kind);
    }
    double t0 = 0, c0 = 0;
    for (long i = 0; i < g_warm + g_n; i++) {
        if (i == g_warm) {
            t0 = now_s();
            c0 = cpu_s(RUSAGE_SELF);
        }
        if (local_op(kind, a, b, spare, &to) < 0)
            die("local %s: %s", kind, strerror(errno));
    }
    double secs = now_s() - t0;
    double cpu = cpu_s(RUSAGE_SELF) - c0;
    printf("ok=%ld fail=0 threads=1 secs=%.6f us_per_op=%.4f cpu_us_per_op=%.4f\n", g_n, secs,
           secs * 1e6 / (double)g_n, cpu * 1e6 / (double)g_n);
    return 0;
}

static int run_udp(void)
{
    /* Close-on-exec, as most programs' sockets are (Python's, GLib's, libuv's...). */
    int fd = socket(g_target.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    set_rcvtimeo(fd);
    int rc = run_udp_loop(fd, &g_target, g_target_len, NULL, 0);
    close(fd);
    return rc;
}

static int run_udp_socks5(void)
{
    int ctl = socks5_open(-1);
    if (ctl < 0)
        die("cannot open the control connection");
    /* The UDP socket on the address the proxy sees us at; its address goes in
     * the request so the relay knows which datagrams are ours. */
    struct sockaddr_storage local;
    socklen_t llen = sizeof local;
    if (getsockname(ctl, (struct sockaddr *)&local, &llen) < 0)
        die("getsockname: %s", strerror(errno));
    if (local.ss_family == AF_INET)
        ((struct sockaddr_in *)&local)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&local)->sin6_port = 0;
    int fd = socket(local.ss_family, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&local, llen) < 0)
        die("bind: %s", strerror(errno));
    llen = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0)
        die("getsockname: %s", strerror(errno));
    set_rcvtimeo(fd);

    unsigned char req[4 + 1 + 255 + 2] = {5, 3, 0};
    size_t len = 3 + put_dest(req + 3, &local, NULL, 0);
    if (write_all(ctl, req, len) < 0)
        die("write UDP ASSOCIATE: %s", strerror(errno));
    unsigned char rep[262];
    int rl = read_socks5_reply(ctl, rep, -1, "UDP ASSOCIATE reply");
    if (rl < 0)
        die("UDP ASSOCIATE failed");
    struct sockaddr_storage relay;
    socklen_t relay_len;
    memset(&relay, 0, sizeof relay);
    if (rep[3] == 1) {
        struct sockaddr_in *r4 = (struct sockaddr_in *)&relay;
        r4->sin_family = AF_INET;
        memcpy(&r4->sin_addr, rep + 4, 4);
        memcpy(&r4->sin_port, rep + 8, 2);
        relay_len = sizeof *r4;
        if (r4->sin_addr.s_addr == htonl(INADDR_ANY))
            r4->sin_addr = ((struct sockaddr_in *)&g_proxy)->sin_addr;
    } else if (rep[3] == 4) {
        struct sockaddr_in6 *r6 = (struct sockaddr_in6 *)&relay;
        r6->sin6_family = AF_INET6;
        memcpy(&r6->sin6_addr, rep + 4, 16);
        memcpy(&r6->sin6_port, rep + 20, 2);
        relay_len = sizeof *r6;
        if (IN6_IS_ADDR_UNSPECIFIED(&r6->sin6_addr))
            r6->sin6_addr = ((struct sockaddr_in6 *)&g_proxy)->sin6_addr;
    } else {
        die("UDP ASSOCIATE reply with a domain BND.ADDR (not supported here)");
    }
    if (relay.ss_family != local.ss_family)
        die("relay address family differs from the UDP socket's");

    /* RSV RSV FRAG=0 ATYP DST.ADDR DST.PORT */
    unsigned char hdr[3 + 1 + 16 + 2] = {0, 0, 0};
    size_t hlen = 3 + put_dest(hdr + 3, &g_target, NULL, g_port);
    int rc = run_udp_loop(fd, &relay, relay_len, hdr, hlen);
    close(fd);
    close(ctl);
    return rc;
}

/* ---------------------------------------------------------------- spawn */

static int run_spawn(char **argv)
{
    long ok = 0, fail = 0;
    double t0 = 0, c0 = 0;
    for (long i = 0; i < g_warm + g_n; i++) {
        if (i == g_warm) {
            t0 = now_s();
            c0 = cpu_s(RUSAGE_CHILDREN);
        }
        pid_t pid;
        int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
        if (rc != 0)
            die("posix_spawnp %s: %s", argv[0], strerror(rc));
        int st;
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR)
                die("waitpid: %s", strerror(errno));
        int good = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (i < g_warm) {
            if (!good)
                die("warm-up run %ld of %s failed (status 0x%x)", i, argv[0], st);
        } else if (good) {
            ok++;
        } else {
            fail++;
        }
    }
    double secs = now_s() - t0;
    double cpu = cpu_s(RUSAGE_CHILDREN) - c0;
    printf("ok=%ld fail=%ld threads=1 secs=%.6f us_per_op=%.3f cpu_us_per_op=%.3f ms_per_op=%.4f\n", ok, fail,
           secs, secs * 1e6 / (double)g_n, cpu * 1e6 / (double)g_n, secs * 1e3 / (double)g_n);
    return fail == 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- echod */

static volatile sig_atomic_t g_stop;
static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

enum { KIND_TCP_LISTEN = 1, KIND_UDP = 2, KIND_CONN = 3 };

static int epoll_add(int ep, int fd, int kind)
{
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.u64 = ((uint64_t)kind << 32) | (uint32_t)fd;
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void close_rst(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static int run_echod(char **addrs, int naddrs)
{
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    for (int i = 0; i < naddrs; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (parse_ip(addrs[i], g_port, &ss, &len) < 0)
            die("not an IP address: %s", addrs[i]);
        for (int udp = 0; udp <= 1; udp++) {
            int fd = socket(ss.ss_family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0)
                die("socket: %s", strerror(errno));
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (ss.ss_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
            if (bind(fd, (struct sockaddr *)&ss, len) < 0)
                die("bind %s port %d (%s): %s", addrs[i], g_port, udp ? "udp" : "tcp", strerror(errno));
            if (!udp && listen(fd, 1024) < 0)
                die("listen: %s", strerror(errno));
            if (epoll_add(ep, fd, udp ? KIND_UDP : KIND_TCP_LISTEN) < 0)
                die("epoll_ctl: %s", strerror(errno));
        }
    }
    fprintf(stderr, "sfybench echod: listening on port %d\n", g_port);
    static unsigned char buf[65536];
    struct epoll_event evs[64];
    while (!g_stop) {
        int n = epoll_wait(ep, evs, 64, 500);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            int kind = (int)(evs[i].data.u64 >> 32);
            int fd = (int)(uint32_t)evs[i].data.u64;
            if (kind == KIND_TCP_LISTEN) {
                for (;;) {
                    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break;
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (epoll_add(ep, c, KIND_CONN) < 0)
                        close(c);
                }
            } else if (kind == KIND_UDP) {
                for (;;) {
                    struct sockaddr_storage from;
                    socklen_t fl = sizeof from;
                    ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
                    if (r < 0)
                        break;
                    sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, fl);
                }
            } else {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r > 0) {
                    ssize_t off = 0;
                    while (off < r) {
                        ssize_t w = write(fd, buf + off, (size_t)(r - off));
                        if (w > 0) {
                            off += w;
                        } else if (w < 0 && errno == EAGAIN) {
                            /* Rare (full send buffer): wait for room, bounded. */
                            struct pollfd p = {fd, POLLOUT, 0};
                            if (poll(&p, 1, 2000) <= 0)
                                break;
                        } else if (w < 0 && errno == EINTR) {
                            continue;
                        } else {
                            break;
                        }
                    }
                    if (off < r)
                        close_rst(fd);
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    close_rst(fd);
                }
            }
        }
    }
    return 0;
}

/* ----------------------------------------------------------------- main */

static void usage(void)
{
    fputs("usage: sfybench tcp|socks5|bulk|bulk-socks5|udp|udp-socks5|pipe (-a IP | -H NAME) -p PORT [-x PROXY_IP] [-P PROXY_PORT]\n"
          "       sfybench local [-n N] [-W WARM] unix|unix-rights|udp-lo|pipe\n"
          "                [-n N] [-t THREADS] [-s SIZE] [-W WARM]\n"
          "       sfybench spawn [-n N] [-W WARM] -- COMMAND ARGS...\n"
          "       sfybench echod -p PORT -l ADDR [-l ADDR...]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    const char *mode = argv[1];
    char *listen_addrs[8];
    int nlisten = 0;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "+a:H:p:x:P:n:t:s:W:l:")) != -1) {
        switch (opt) {
        case 'a': g_ip = optarg; break;
        case 'H': g_name = optarg; break;
        case 'p': g_port = atoi(optarg); break;
        case 'x': g_pip = optarg; break;
        case 'P': g_pport = atoi(optarg); break;
        case 'n': g_n = atol(optarg); break;
        case 't': g_threads = atoi(optarg); break;
        case 's': g_size = atoi(optarg); break;
        case 'W': g_warm = atol(optarg); break;
        case 'l':
            if (nlisten < 8)
                listen_addrs[nlisten++] = optarg;
            break;
        default: usage();
        }
    }
    if (g_n < 1 || g_threads < 1 || g_threads > 256 || g_size < 8 || g_size > MAX_SIZE || g_warm < 0)
        die("bad -n/-t/-s/-W");
    signal(SIGPIPE, SIG_IGN);

    if (strcmp(mode, "local") == 0) {
        if (optind >= argc)
            usage();
        return run_local(argv[optind]);
    }
    if (strcmp(mode, "spawn") == 0) {
        if (optind >= argc)
            usage();
        return run_spawn(argv + optind);
    }
    if (g_port < 1 || g_port > 65535)
        die("-p PORT is required");
    snprintf(g_portstr, sizeof g_portstr, "%d", g_port);
    if (strcmp(mode, "echod") == 0) {
        if (nlisten == 0)
            usage();
        return run_echod(listen_addrs, nlisten);
    }
    if (!!g_ip == !!g_name)
        die("give exactly one of -a IP and -H NAME");
    if (g_ip && parse_ip(g_ip, g_port, &g_target, &g_target_len) < 0)
        die("not an IP address: %s", g_ip);
    int socks = strcmp(mode, "socks5") == 0 || strcmp(mode, "udp-socks5") == 0 || strcmp(mode, "bulk-socks5") == 0;
    if (socks) {
        if (!g_pip || parse_ip(g_pip, g_pport, &g_proxy, &g_proxy_len) < 0)
            die("-x PROXY_IP is required (an IP address)");
        if (g_name && strlen(g_name) > 255)
            die("name too long");
    }
    if (strcmp(mode, "tcp") == 0)
        return run_tcp_like(op_tcp);
    if (strcmp(mode, "socks5") == 0)
        return run_tcp_like(op_socks5);
    if (strcmp(mode, "bulk") == 0 || strcmp(mode, "bulk-socks5") == 0)
        return run_bulk(socks);
    if (g_name)
        die("UDP modes take -a IP only");
    if (strcmp(mode, "udp") == 0)
        return run_udp();
    if (strcmp(mode, "pipe") == 0)
        return run_pipe();
    if (strcmp(mode, "udp-socks5") == 0)
        return run_udp_socks5();
    usage();
    return 2;
}
