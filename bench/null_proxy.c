/*
 * bench/null_proxy.c - the cheapest possible HTTP/1.1 keep-alive reverse proxy for the
 * benchmark's shape (one request in flight per connection, small messages), used only
 * to measure the floor: the CPU per request that the kernel's loopback TCP work of a
 * proxy costs, with (almost) nothing done in user space. It does not parse HTTP: each
 * client connection gets its own upstream connection, and whatever one side sends is
 * written to the other. One thread, epoll, non-blocking sockets.
 *
 *   cc -O2 -o null_proxy null_proxy.c && ./null_proxy 127.0.0.1:18095 127.0.0.1:18080
 *
 * Not a product: no partial-write handling beyond a blocking fallback, no timeouts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 65536
static int peer[MAXFD];

static int parse(const char *s, struct sockaddr_in *a) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || colon - s >= (long)sizeof host) return -1;
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons(atoi(colon + 1));
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void closepair(int ep, int fd) {
    int p = peer[fd];
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    if (p > 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, p, NULL);
        close(p);
        peer[p] = 0;
    }
    peer[fd] = 0;
}

int main(int argc, char **argv) {
    struct sockaddr_in listen_at, upstream;
    if (argc != 3 || parse(argv[1], &listen_at) || parse(argv[2], &upstream)) {
        fprintf(stderr, "usage: %s LISTEN_IP:PORT UPSTREAM_IP:PORT\n", argv[0]);
        return 2;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&listen_at, sizeof listen_at) || listen(l, 4096)) {
        perror("listen");
        return 1;
    }
    fcntl(l, F_SETFL, O_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    struct epoll_event events[256];
    char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int u = socket(AF_INET, SOCK_STREAM, 0);
                    if (c >= MAXFD || u >= MAXFD ||
                        connect(u, (struct sockaddr *)&upstream, sizeof upstream)) {
                        close(c);
                        close(u);
                        continue;
                    }
                    fcntl(u, F_SETFL, O_NONBLOCK);
                    nodelay(c);
                    nodelay(u);
                    peer[c] = u;
                    peer[u] = c;
                    struct epoll_event e1 = {.events = EPOLLIN, .data.fd = c};
                    struct epoll_event e2 = {.events = EPOLLIN, .data.fd = u};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1);
                    epoll_ctl(ep, EPOLL_CTL_ADD, u, &e2);
                }
                continue;
            }
            if (!peer[fd]) continue;
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                closepair(ep, fd);
                continue;
            }
            ssize_t off = 0;
            while (off < r) {
                ssize_t w = send(peer[fd], buf + off, r - off, MSG_NOSIGNAL);
                if (w < 0 && errno == EAGAIN) continue; /* spin: benchmark use only */
                if (w <= 0) break;
                off += w;
            }
            if (off < r) closepair(ep, fd);
        }
    }
}
