/* Probes of the preload library's C-level promises, run under socksify by
 * tests/tests/preload_semantics.rs. Each subcommand prints "ok" or what went wrong. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <resolv.h>
#include <arpa/nameser.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <signal.h>
#include <sys/time.h>

static volatile sig_atomic_t ticks;
static void tick(int sig) { (void)sig; ticks++; }

static int fail(const char *what) { printf("FAIL %s (errno %d)\n", what, errno); return 1; }

static int tcp_to(const char *host, const char *port, int *fd_out, struct sockaddr_storage *peer) {
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc) { printf("FAIL getaddrinfo %s: %s\n", host, gai_strerror(rc)); return 1; }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (peer) memcpy(peer, res->ai_addr, res->ai_addrlen);
    errno = 4242;
    if (connect(fd, res->ai_addr, res->ai_addrlen)) return fail("connect");
    if (errno != 4242) { printf("FAIL errno changed by a successful connect: %d\n", errno); return 1; }
    freeaddrinfo(res);
    *fd_out = fd;
    return 0;
}

static int echo(int fd) {
    char buf[16];
    if (write(fd, "probe\n", 6) != 6) return fail("write");
    ssize_t n = 0;
    while (n < 6) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 10000) != 1) return fail("poll");
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r <= 0) return fail("read");
        n += r;
    }
    return memcmp(buf, "probe\n", 6) ? fail("echo content") : 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *cmd = argv[1], *host = argv[2];
    if (!strcmp(cmd, "errno")) {
        int fd;
        if (tcp_to(host, "7", &fd, NULL) || echo(fd)) return 1;
        /* a call the library passes through keeps errno as the program left it */
        errno = 777;
        struct sockaddr_un un = {AF_UNIX, "/nonexistent/sock"};
        int u = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(u, (struct sockaddr *)&un, sizeof un) == 0 || errno != ENOENT) return fail("AF_UNIX connect untouched");
        errno = 778;
        struct addrinfo *r;
        if (getaddrinfo("127.0.0.1", "80", NULL, &r)) return fail("numeric getaddrinfo");
        freeaddrinfo(r);
        if (errno != 778) return fail("errno kept across getaddrinfo");
        puts("ok");
    } else if (!strcmp(cmd, "nonblocking")) {
        struct addrinfo hints = {0}, *res;
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(host, "7", &hints, &res)) return fail("getaddrinfo");
        int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int before = fcntl(fd, F_GETFL), fdflags = fcntl(fd, F_GETFD);
        int r = connect(fd, res->ai_addr, res->ai_addrlen);
        if (r && errno != EINPROGRESS) return fail("nonblocking connect");
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, 20000) != 1) return fail("poll for connect");
        int err = 0; socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { errno = err; return fail("SO_ERROR"); }
        if (fcntl(fd, F_GETFL) != before || fcntl(fd, F_GETFD) != fdflags) return fail("flags changed");
        if (echo(fd)) return 1;
        puts("ok");
    } else if (!strcmp(cmd, "hints")) {
        struct addrinfo *res, *p;
        int n = 0, stream = 0, dgram = 0;
        if (getaddrinfo(host, "80", NULL, &res)) return fail("NULL hints");
        for (p = res; p; p = p->ai_next, n++) {
            stream += p->ai_socktype == SOCK_STREAM;
            dgram += p->ai_socktype == SOCK_DGRAM;
            if (ntohs(((struct sockaddr_in *)p->ai_addr)->sin_port) != 80) return fail("service name");
        }
        freeaddrinfo(res);
        if (!stream || !dgram) { printf("FAIL NULL hints gave %d entries\n", n); return 1; }
        struct addrinfo sh = {0};
        sh.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(host, "http", &sh, &res) || ntohs(((struct sockaddr_in *)res->ai_addr)->sin_port) != 80)
            return fail("service by name");
        freeaddrinfo(res);
        struct addrinfo h = {0};
        h.ai_flags = AI_NUMERICHOST;
        if (getaddrinfo(host, "80", &h, &res) != EAI_NONAME) return fail("AI_NUMERICHOST with a name");
        h.ai_flags = AI_CANONNAME; h.ai_family = AF_INET6; h.ai_socktype = SOCK_DGRAM;
        if (getaddrinfo(host, "53", &h, &res)) return fail("AF_INET6 + AI_CANONNAME");
        if (res->ai_family != AF_INET6 || res->ai_socktype != SOCK_DGRAM || res->ai_next
            || !res->ai_canonname || strcmp(res->ai_canonname, host)) return fail("AF_INET6 answer");
        freeaddrinfo(res);
        h.ai_flags = AI_PASSIVE; h.ai_family = AF_INET; h.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(NULL, "8080", &h, &res)) return fail("AI_PASSIVE");
        if (((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr != 0) return fail("AI_PASSIVE wildcard");
        freeaddrinfo(res);
        puts("ok");
    } else if (!strcmp(cmd, "hostent")) {
        struct hostent ret, *result = NULL; char small[8], big[1024]; int herr = 0;
        if (gethostbyname_r(host, &ret, small, sizeof small, &result, &herr) != ERANGE || result)
            return fail("gethostbyname_r with a small buffer gives ERANGE");
        if (gethostbyname_r(host, &ret, big, sizeof big, &result, &herr) || result != &ret) return fail("gethostbyname_r");
        struct hostent *h2 = gethostbyname2(host, AF_INET6);
        if (!h2 || h2->h_addrtype != AF_INET6 || h2->h_length != 16) return fail("gethostbyname2 AF_INET6");
        struct hostent *h = gethostbyname(host);
        if (!h || strcmp(h->h_name, host) || h->h_length != 4) return fail("gethostbyname");
        struct hostent *back = gethostbyaddr(h->h_addr_list[0], 4, AF_INET);
        if (!back || strcmp(back->h_name, host)) return fail("gethostbyaddr of a fake address");
        char name[256];
        struct sockaddr_in sin = {AF_INET, htons(80)};
        memcpy(&sin.sin_addr, h->h_addr_list[0], 4);
        if (getnameinfo((struct sockaddr *)&sin, sizeof sin, name, sizeof name, NULL, 0, NI_NAMEREQD) || strcmp(name, host))
            return fail("getnameinfo of a fake address");
        inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
        if (getnameinfo((struct sockaddr *)&sin, sizeof sin, name, sizeof name, NULL, 0, NI_NAMEREQD) != EAI_NONAME)
            return fail("getnameinfo NI_NAMEREQD of an unknown address (no PTR query)");
        if (getnameinfo((struct sockaddr *)&sin, sizeof sin, name, sizeof name, NULL, 0, 0) || strcmp(name, "192.0.2.1"))
            return fail("getnameinfo numeric fallback");
        puts("ok");
    } else if (!strcmp(cmd, "peer")) {
        int fd; struct sockaddr_storage want, got; socklen_t len = sizeof got;
        if (tcp_to(host, "7", &fd, &want)) return 1;
        if (getpeername(fd, (struct sockaddr *)&got, &len)) return fail("getpeername");
        if (memcmp(&((struct sockaddr_in *)&got)->sin_addr, &((struct sockaddr_in *)&want)->sin_addr, 4)
            || ((struct sockaddr_in *)&got)->sin_port != ((struct sockaddr_in *)&want)->sin_port)
            return fail("getpeername is the address the program connected to");
        puts("ok");
    } else if (!strcmp(cmd, "resquery")) {
        unsigned char answer[512];
        if (res_query(host, ns_c_in, ns_t_a, answer, sizeof answer) != -1) return fail("res_query answered");
        if (res_search(host, ns_c_in, ns_t_mx, answer, sizeof answer) != -1) return fail("res_search answered");
        puts("ok");
    } else if (!strcmp(cmd, "eintr")) {
        /* SIGALRM every 10 ms during the handshake, with and without SA_RESTART */
        for (int restart = 0; restart < 2; restart++) {
            struct sigaction sa = {0};
            sa.sa_handler = tick;
            sa.sa_flags = restart ? SA_RESTART : 0;
            sigaction(SIGALRM, &sa, NULL);
            struct itimerval it = {{0, 10000}, {0, 10000}};
            setitimer(ITIMER_REAL, &it, NULL);
            struct sockaddr_in sin = {AF_INET, htons(80)};
            inet_pton(AF_INET, host, &sin.sin_addr);
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            ticks = 0;
            int r = connect(fd, (struct sockaddr *)&sin, sizeof sin);
            struct itimerval off = {{0, 0}, {0, 0}};
            setitimer(ITIMER_REAL, &off, NULL);
            if (!restart) {
                /* As the kernel: EINTR, the connection going on; then writable, SO_ERROR 0. */
                if (r == 0 || errno != EINTR) return fail("connect without SA_RESTART (want EINTR)");
                struct pollfd p = {fd, POLLOUT, 0};
                if (poll(&p, 1, 20000) != 1) return fail("poll after EINTR");
                int err = -1;
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) { errno = err; return fail("SO_ERROR after EINTR"); }
            } else {
                if (r != 0) return fail("connect with SA_RESTART");
                if (ticks < 10) { printf("FAIL only %d signals during the handshake\n", (int)ticks); return 1; }
            }
            close(fd);
        }
        puts("ok");
    } else if (!strcmp(cmd, "refused")) {
        struct addrinfo hints = {0}, *res;
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(host, "7", &hints, &res)) return fail("getaddrinfo");
        int fd = socket(res->ai_family, SOCK_STREAM, 0);
        errno = 0;
        if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) return fail("connect should fail");
        printf("errno=%d\n", errno);
    } else return 2;
    return 0;
}
