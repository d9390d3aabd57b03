/* Programs that go around LD_PRELOAD, for the kernel guard's tests. Each fetches
 * http://HOST:PORT/PATH and prints the body; HOST may be a name (getaddrinfo) or an address.
 *
 *   bypass raw HOST PORT PATH       connect with an inline `syscall` instruction (no libc)
 *   bypass alias HOST PORT PATH     glibc's public alias __connect
 *   bypass dlsym HOST PORT PATH     dlsym(dlopen("libc.so.6"), "connect")
 *   bypass uring HOST PORT PATH     io_uring IORING_OP_CONNECT; falls back to connect() when
 *                                   io_uring_setup fails (prints "uring: fallback (errno)")
 *   bypass libc HOST PORT PATH      plain connect() (also what the static builds use)
 *   bypass signal HOST PORT         connects from a SIGALRM handler while the main thread is
 *                                   inside getaddrinfo (a hook), 1 ms apart; prints
 *                                   "handler connects: N ok, M failed"
 *   bypass efault                   connect with bad sockaddr pointers: prints the errnos
 *   bypass exec-empty-env PROG ARGS execve with an empty environment
 *   bypass no-seccomp PROG ARGS     runs PROG where seccomp(2) fails with EPERM (as under a
 *                                   container profile that forbids it)
 *   bypass udp-unspec IP PORT       a datagram to IP:PORT with sa_family AF_UNSPEC (which an
 *                                   IPv4 UDP socket sends to IP:PORT); prints the result
 *   bypass fdswap N IP PORT [udp]   another thread swaps descriptor 50 between an AF_UNIX (or,
 *                                   with udp, a UDP) and a TCP socket while this one connects it
 *                                   to IP:PORT N times
 *   bypass reach                    ptrace, pidfd_getfd and process_vm_writev of the parent
 *   bypass sndtimeo IP PORT MS      a blocking connect with SO_SNDTIMEO = MS: errno and time
 *   bypass unspec-peer IP PORT      connect, getpeername, connect(AF_UNSPEC), getpeername
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/prctl.h>
#if __has_include(<linux/filter.h>) /* not with musl-gcc, which has no kernel headers */
#define WITH_SECCOMP 1
#include <linux/filter.h>
#include <linux/seccomp.h>
#endif
#ifdef WITH_URING
#include <liburing.h>
#endif

static long raw3(long n, long a, long b, long c) {
    long ret;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n, x0 __asm__("x0") = a, x1 __asm__("x1") = b, x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    ret = x0;
#endif
    return ret;
}

static int resolve(const char *host, const char *port, struct sockaddr_storage *out, socklen_t *len) {
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "getaddrinfo %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int fetch(int fd, const char *host, const char *path) {
    char req[512];
    int n = snprintf(req, sizeof req, "GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    if (write(fd, req, n) != n) { perror("write"); return 1; }
    static char buf[1 << 20];
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, buf + got, sizeof buf - got - 1)) > 0) got += r;
    buf[got] = 0;
    char *body = strstr(buf, "\r\n\r\n");
    if (!body || strncmp(buf, "HTTP/1.", 7)) { fprintf(stderr, "bad response\n"); return 1; }
    fputs(body + 4, stdout);
    return 0;
}

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
#ifdef __GLIBC__
extern int __connect(int, const struct sockaddr *, socklen_t);
#endif

static const char *errname(int e) {
    switch (e) {
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPERM: return "EPERM";
    case ENETUNREACH: return "ENETUNREACH";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EINPROGRESS: return "EINPROGRESS";
    case ENOTCONN: return "ENOTCONN";
    case EISCONN: return "EISCONN";
    default: return strerror(e);
    }
}

static int via(const char *mode, const char *host, const char *port, const char *path) {
    struct sockaddr_storage sa;
    socklen_t len;
    if (resolve(host, port, &sa, &len)) return 2;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int rc = -1;
    if (!strcmp(mode, "raw")) {
        long r = raw3(SYS_connect, fd, (long)&sa, len);
        if (r < 0) { errno = -r; rc = -1; } else rc = 0;
    } else if (!strcmp(mode, "alias")) {
#ifdef __GLIBC__
        rc = __connect(fd, (struct sockaddr *)&sa, len);
#else
        fprintf(stderr, "no __connect in this libc\n");
        return 2;
#endif
    } else if (!strcmp(mode, "dlsym")) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        connect_fn f = libc ? (connect_fn)dlsym(libc, "connect") : NULL;
        if (!f) { fprintf(stderr, "dlsym: %s\n", dlerror()); return 2; }
        rc = f(fd, (struct sockaddr *)&sa, len);
    } else if (!strcmp(mode, "uring")) {
#ifdef WITH_URING
        struct io_uring ring;
        int e = io_uring_queue_init(4, &ring, 0);
        if (e < 0) {
            printf("uring: fallback (%s)\n", strerror(-e));
            fflush(stdout);
            rc = connect(fd, (struct sockaddr *)&sa, len);
        } else {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_connect(sqe, fd, (struct sockaddr *)&sa, len);
            io_uring_submit(&ring);
            struct io_uring_cqe *cqe;
            io_uring_wait_cqe(&ring, &cqe);
            rc = cqe->res < 0 ? (errno = -cqe->res, -1) : 0;
            io_uring_cqe_seen(&ring, cqe);
            printf("uring: connected with io_uring\n");
            fflush(stdout);
        }
#else
        fprintf(stderr, "built without liburing\n");
        return 2;
#endif
    } else {
        rc = connect(fd, (struct sockaddr *)&sa, len);
    }
    if (rc != 0) { fprintf(stderr, "connect: %s\n", strerror(errno)); return 1; }
    return fetch(fd, host, path);
}

static struct sockaddr_in target;
static volatile int handler_ok, handler_failed;

static void on_alarm(int sig) {
    (void)sig;
    int saved = errno;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) == 0) handler_ok++;
    else handler_failed++;
    close(fd);
    errno = saved;
}

static int from_signal(const char *host, const char *port) {
    struct sockaddr_storage sa;
    socklen_t len;
    if (resolve(host, port, &sa, &len)) return 2;
    memcpy(&target, &sa, sizeof target);
    struct sigaction act = {0};
    act.sa_handler = on_alarm;
    act.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &act, NULL);
    /* Every 5 ms: a proxied connect in the handler takes about a millisecond (a debug build),
       and a timer that fires faster than the handler ends would never let main() run. */
    struct itimerval it = {{0, 5000}, {0, 5000}};
    setitimer(ITIMER_REAL, &it, NULL);
    char name[64];
    for (int i = 0; handler_ok + handler_failed < 30 && i < 2000000; i++) {
        struct addrinfo *res;
        snprintf(name, sizeof name, "n%d.socksify.test", i % 50);
        if (getaddrinfo(name, "80", NULL, &res) == 0) freeaddrinfo(res);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("handler connects: %d ok, %d failed\n", handler_ok, handler_failed);
    return 0;
}

static int efault(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int r = connect(fd, (struct sockaddr *)0x10, 16);
    printf("low pointer: %d %s\n", r, r ? errname(errno) : "-");
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p + page, page);
    struct sockaddr_in *edge = (struct sockaddr_in *)(p + page - 8); /* half of it is unmapped */
    memset(edge, 0, 8);
    edge->sin_family = AF_INET;
    r = connect(fd, (struct sockaddr *)edge, sizeof *edge);
    printf("end of page: %d %s\n", r, r ? errname(errno) : "-");
    return 0;
}

static int make_target(const char *ip, const char *port, struct sockaddr_in *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(atoi(port));
    return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static int udp_unspec(const char *ip, const char *port) {
    struct sockaddr_in sa;
    if (make_target(ip, port, &sa)) return 2;
    sa.sin_family = AF_UNSPEC;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    ssize_t n = sendto(fd, "unspec", 6, 0, (struct sockaddr *)&sa, sizeof sa);
    if (n < 0) { printf("sendto: %s\n", errname(errno)); return 0; }
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[16];
    printf("sent %zd, %s\n", n, recv(fd, buf, sizeof buf, 0) > 0 ? "echoed" : "no echo");
    return 0;
}

static volatile int swapping = 1;
static int swap_udp;
static int other_socket(void) {
    return swap_udp ? socket(AF_INET, SOCK_DGRAM, 0) : socket(AF_UNIX, SOCK_STREAM, 0);
}
static void *swapper(void *arg) {
    (void)arg;
    for (int i = 0; swapping; i++) {
        int s = (i & 1) ? other_socket() : socket(AF_INET, SOCK_STREAM, 0);
        dup2(s, 50);
        close(s);
    }
    return NULL;
}

static int fdswap(int n, const char *ip, const char *port) {
    struct sockaddr_in sa;
    if (make_target(ip, port, &sa)) return 2;
    int s = other_socket();
    dup2(s, 50);
    close(s);
    pthread_t th;
    pthread_create(&th, NULL, swapper, NULL);
    int ok = 0;
    for (int i = 0; i < n; i++)
        if (connect(50, (struct sockaddr *)&sa, sizeof sa) == 0) ok++;
    swapping = 0;
    pthread_join(th, NULL);
    printf("connects that succeeded: %d of %d\n", ok, n);
    return 0;
}

static int reach(void) {
    pid_t parent = getppid();
    errno = 0;
    long r = ptrace(PTRACE_ATTACH, parent, 0, 0);
    printf("ptrace: %s\n", r == 0 ? "attached" : errname(errno));
    int pidfd = syscall(SYS_pidfd_open, parent, 0);
    int fd = pidfd >= 0 ? syscall(SYS_pidfd_getfd, pidfd, 2, 0) : -1;
    printf("pidfd_getfd: %s\n", fd >= 0 ? "got it" : errname(errno));
    char byte = 0;
    struct iovec local = {&byte, 1}, remote = {&byte, 1};
    ssize_t w = process_vm_writev(parent, &local, 1, &remote, 1, 0);
    printf("process_vm_writev: %s\n", w >= 0 ? "wrote" : errname(errno));
    return 0;
}

static double ms_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int sndtimeo(const char *ip, const char *port, int ms) {
    struct sockaddr_in sa;
    if (make_target(ip, port, &sa)) return 2;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    double t = ms_now();
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    printf("connect: %s after %.0f ms\n", r == 0 ? "ok" : errname(errno), ms_now() - t);
    return 0;
}

static int unspec_peer(const char *ip, const char *port) {
    struct sockaddr_in sa, peer;
    if (make_target(ip, port, &sa)) return 2;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) { printf("connect: %s\n", errname(errno)); return 1; }
    socklen_t len = sizeof peer;
    getpeername(fd, (struct sockaddr *)&peer, &len);
    char text[32];
    printf("peer: %s:%d\n", inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text), ntohs(peer.sin_port));
    struct sockaddr un = {0};
    un.sa_family = AF_UNSPEC;
    printf("disconnect: %s\n", connect(fd, &un, sizeof un) == 0 ? "ok" : errname(errno));
    len = sizeof peer;
    printf("peer after: %s\n", getpeername(fd, (struct sockaddr *)&peer, &len) == 0 ? "connected" : errname(errno));
    int err = -1;
    len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("SO_ERROR: %d\n", err);
    return 0;
}

static int no_seccomp(char **argv) {
#ifndef WITH_SECCOMP
    (void)argv;
    fprintf(stderr, "built without seccomp headers\n");
    return 2;
#else
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_seccomp, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        perror("seccomp");
        return 2;
    }
    execvp(argv[0], argv);
    perror("execvp");
    return 127;
#endif
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "no-seccomp")) return no_seccomp(argv + 2);
    if (argc >= 4 && !strcmp(argv[1], "udp-unspec")) return udp_unspec(argv[2], argv[3]);
    if (argc >= 5 && !strcmp(argv[1], "fdswap")) {
        swap_udp = argc >= 6 && !strcmp(argv[5], "udp");
        return fdswap(atoi(argv[2]), argv[3], argv[4]);
    }
    if (argc >= 2 && !strcmp(argv[1], "reach")) return reach();
    if (argc >= 5 && !strcmp(argv[1], "sndtimeo")) return sndtimeo(argv[2], argv[3], atoi(argv[4]));
    if (argc >= 4 && !strcmp(argv[1], "unspec-peer")) return unspec_peer(argv[2], argv[3]);
    if (argc >= 2 && !strcmp(argv[1], "efault")) return efault();
    if (argc >= 4 && !strcmp(argv[1], "signal")) return from_signal(argv[2], argv[3]);
    if (argc >= 3 && !strcmp(argv[1], "exec-empty-env")) {
        char *env[] = {NULL};
        execve(argv[2], argv + 2, env);
        perror("execve");
        return 127;
    }
    if (argc < 5) { fprintf(stderr, "usage: see the comment at the top\n"); return 2; }
    return via(argv[1], argv[2], argv[3], argv[4]);
}
