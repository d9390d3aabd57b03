/* A descriptor number reused behind the library's back: a UDP socket made with libc's
 * socket() (the library notes its kind), closed with a raw system call, and the number taken
 * by a TCP socket made with a raw system call. Then libc's connect to IP PORT and an echo:
 * under socksify the connection must be proxied as any TCP connection (never take the UDP
 * socket's route), and bare it connects directly. Prints "echo: ok" or the failure. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static long raw3(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: reuse IP PORT\n");
        return 2;
    }
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    if (u < 0 || raw3(SYS_close, u, 0, 0) != 0)
        return 3;
    long t = raw3(SYS_socket, AF_INET, SOCK_STREAM, 0);
    if (t != u) {
        printf("the number was not reused (%d, %ld)\n", u, t);
        return 4;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    if (connect(u, (struct sockaddr *)&sa, sizeof sa) != 0) {
        printf("connect: %s\n", strerror(errno));
        return 0;
    }
    char buf[8] = {0};
    if (write(u, "ping", 4) != 4 || read(u, buf, 4) != 4 || memcmp(buf, "ping", 4) != 0) {
        printf("echo: failed\n");
        return 0;
    }
    printf("echo: ok\n");
    return 0;
}
