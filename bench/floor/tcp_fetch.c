// Raw floor for a remote page fetch: a 16-byte request over loopback TCP (TCP_NODELAY) answered with 4096 bytes.
//   tcp_fetch server            listens on 127.0.0.1:0, prints "READY port=<p>", serves one client until EOF
//   tcp_fetch client PORT N     N round trips after 200 warm-up ones; prints one latency in ns per line
#define _GNU_SOURCE
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

#define FLOOR_NAME "tcp_fetch"
#include "floor.h"

#define REQ 16
#define PAGE 4096
#define WARMUP 200

static int serve(void) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
  socklen_t al = sizeof a;
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
  if (listen(ls, 1) != 0) die("listen");
  if (getsockname(ls, (struct sockaddr *)&a, &al) != 0) die("getsockname");
  printf("READY port=%d\n", ntohs(a.sin_port));
  fflush(stdout);
  int c = accept(ls, NULL, NULL);
  if (c < 0) die("accept");
  nodelay(c);
  char req[REQ], page[PAGE];
  for (size_t i = 0; i < PAGE; i++) page[i] = (char)(i * 31);
  while (io_full(c, req, REQ, 0) == 0) {
    memcpy(page, req, 8);  // the reply depends on the request, like a page lookup
    if (io_full(c, page, PAGE, 1) != 0) die("write reply");
  }
  close(c);
  close(ls);
  return 0;
}

static int client(int port, long n) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                          .sin_port = htons((uint16_t)port)};
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  nodelay(s);
  char req[REQ] = {0}, page[PAGE];
  uint64_t *lat = calloc((size_t)n, sizeof *lat);
  if (!lat) die("calloc");
  for (long i = -WARMUP; i < n; i++) {
    uint64_t id = (uint64_t)(i + WARMUP);
    memcpy(req, &id, 8);
    uint64_t t0 = now_ns();
    if (io_full(s, req, REQ, 1) != 0) die("write request");
    if (io_full(s, page, PAGE, 0) != 0) die("read reply");
    uint64_t t1 = now_ns();
    if (memcmp(page, &id, 8) != 0) {
      fprintf(stderr, "tcp_fetch: reply mismatch at %ld\n", i);
      return 1;
    }
    if (i >= 0) lat[i] = t1 - t0;
  }
  close(s);
  for (long i = 0; i < n; i++) printf("%llu\n", (unsigned long long)lat[i]);
  free(lat);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "server") == 0) return serve();
  if (argc == 4 && strcmp(argv[1], "client") == 0) {
    long n = strtol(argv[3], NULL, 10);
    int port = atoi(argv[2]);
    if (n <= 0 || n > 10000000 || port <= 0 || port > 65535) {
      fprintf(stderr, "tcp_fetch: bad arguments\n");
      return 2;
    }
    return client(port, n);
  }
  fprintf(stderr, "usage: tcp_fetch server | tcp_fetch client PORT N\n");
  return 2;
}
