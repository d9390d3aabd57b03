/*
 * badptr IP PORT — every way a program can hand a socket call a bad pointer, on a UDP socket
 * with a round trip to IP:PORT behind it (under socksify: a UDP association). Prints one line
 * per case: the call's result and errno. The kernel's answer (the same program without
 * socksify) is the reference: EFAULT, EMSGSIZE… — never a crash.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BAD ((void *)8)

static struct sockaddr_in target;

/* A UDP socket that had one round trip with the target. */
static int associated(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    char buf[16];
    struct pollfd p = {s, POLLIN, 0};
    if (s < 0 || sendto(s, "hello", 5, 0, (struct sockaddr *)&target, sizeof target) != 5 || poll(&p, 1, 5000) != 1 ||
        recv(s, buf, sizeof buf, 0) != 5) {
        perror("round trip");
        exit(2);
    }
    return s;
}

/* A datagram from the target waiting on `s`. */
static void reply_waiting(int s)
{
    char buf[16];
    struct pollfd p = {s, POLLIN, 0};
    sendto(s, "again", 5, 0, (struct sockaddr *)&target, sizeof target);
    poll(&p, 1, 5000);
    (void)buf;
}

static void report(const char *what, long r)
{
    printf("%s: %ld %s\n", what, r, r < 0 ? strerrorname_np(errno) : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    target.sin_family = AF_INET;
    target.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &target.sin_addr);
    struct iovec iov = {"x", 1};
    struct msghdr m;
    int s = associated();

    memset(&m, 0, sizeof m);
    m.msg_name = &target, m.msg_namelen = sizeof target, m.msg_iov = BAD, m.msg_iovlen = 1;
    report("sendmsg, bad iovec list", sendmsg(s, &m, 0));
    m.msg_iov = &iov, m.msg_iovlen = (size_t)1 << 40;
    report("sendmsg, huge iovec count", sendmsg(s, &m, 0));
    m.msg_iovlen = 1, m.msg_name = BAD;
    report("sendmsg, bad address", sendmsg(s, &m, 0));
    report("sendmsg, bad header", sendmsg(s, BAD, 0));
    report("sendto, bad address", sendto(s, "x", 1, 0, BAD, sizeof target));
    report("sendto, bad buffer", sendto(s, BAD, 1, 0, (struct sockaddr *)&target, sizeof target));
    report("sendmmsg, bad vector", sendmmsg(s, BAD, 2, 0));

    reply_waiting(s);
    memset(&m, 0, sizeof m);
    m.msg_iov = BAD, m.msg_iovlen = 1;
    report("recvmsg, bad iovec list", recvmsg(s, &m, MSG_DONTWAIT));
    reply_waiting(s);
    report("recvmsg, bad header", recvmsg(s, BAD, MSG_DONTWAIT));
    reply_waiting(s);
    report("recv, bad buffer", recv(s, BAD, 16, MSG_DONTWAIT));
    reply_waiting(s);
    char b[16];
    socklen_t l = sizeof target;
    report("recvfrom, bad address", recvfrom(s, b, sizeof b, MSG_DONTWAIT, BAD, &l));
    reply_waiting(s);
    report("recvfrom, bad length", recvfrom(s, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&target, BAD));
    reply_waiting(s);
    report("recvmmsg, bad vector", recvmmsg(s, BAD, 2, MSG_DONTWAIT, NULL));
    report("connect, bad address", connect(s, BAD, sizeof target));
    report("getpeername, bad length", getpeername(s, (struct sockaddr *)&target, BAD));
    report("getsockname, bad address", getsockname(s, BAD, &l));
    return 0;
}
