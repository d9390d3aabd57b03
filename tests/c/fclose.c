/*
 * fclose tcp|udp N IP PORT — N sockets, each used once through stdio and closed with fclose(),
 * which closes the descriptor inside libc (no close() call that a preload library sees).
 * tcp: connect to IP:PORT, write a line, read the echo. udp: one datagram to IP:PORT and its
 * echo. Prints the resident set size after the first 500 and after all N (kB), and how many
 * sockets are still open at the end (the program holds none).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static long rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    if (f)
        fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int open_sockets(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    char path[300], link[64];
    while (d && (e = readdir(d))) {
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, link, sizeof link - 1);
        if (k > 0 && (link[k] = 0, !strncmp(link, "socket:", 7)))
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    int udp = !strcmp(argv[1], "udp"), n = atoi(argv[2]);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
    inet_pton(AF_INET, argv[3], &to.sin_addr);
    long first = 0;
    for (int i = 0; i < n; i++) {
        int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
        char buf[16];
        struct pollfd p = {s, POLLIN, 0};
        if (udp) {
            if (sendto(s, "ping", 4, 0, (struct sockaddr *)&to, sizeof to) != 4 || poll(&p, 1, 5000) != 1 ||
                recv(s, buf, sizeof buf, 0) != 4) {
                fprintf(stderr, "datagram %d failed\n", i);
                return 1;
            }
        } else if (connect(s, (struct sockaddr *)&to, sizeof to)) {
            perror("connect");
            return 1;
        }
        FILE *f = fdopen(s, "r+");
        if (!udp) {
            fputs("ping\n", f);
            fflush(f);
            if (!fgets(buf, sizeof buf, f)) {
                fprintf(stderr, "echo %d failed\n", i);
                return 1;
            }
        }
        fclose(f);
        if (i == 499)
            first = rss_kb();
    }
    /* One more proxied connection, closed with close(): whatever the library still held for
       the sockets that fclose() closed must be gone by now. */
    int last = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(last, (struct sockaddr *)&to, sizeof to))
        perror("connect");
    close(last);
    printf("rss after 500: %ld kB, after %d: %ld kB, sockets open: %d\n", first, n, rss_kb(), open_sockets());
    return 0;
}
