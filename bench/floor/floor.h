// What the C floors share: error exit, whole reads/writes, TCP_NODELAY and a monotonic clock. Each floor defines
// FLOOR_NAME (its program name, for error lines) before including this.
#ifndef HOTPOT_BENCH_FLOOR_H
#define HOTPOT_BENCH_FLOOR_H
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, FLOOR_NAME ": %s: %s\n", what, strerror(errno));
  exit(1);
}

static int io_full(int fd, void *buf, size_t len, int writing) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = writing ? write(fd, p, len) : read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("setsockopt TCP_NODELAY");
}

// A listening socket on 127.0.0.1 at a port the kernel picks, announced as "READY port=<p>" on stdout.
static int listen_loopback(int backlog) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
  socklen_t al = sizeof a;
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
  if (listen(ls, backlog) != 0) die("listen");
  if (getsockname(ls, (struct sockaddr *)&a, &al) != 0) die("getsockname");
  printf("READY port=%d\n", ntohs(a.sin_port));
  fflush(stdout);
  return ls;
}

// A TCP connection to 127.0.0.1:port with TCP_NODELAY.
static int connect_loopback(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                          .sin_port = htons((uint16_t)port)};
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  nodelay(s);
  return s;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#endif
