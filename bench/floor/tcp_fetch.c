// Raw floor for a remote page fetch: a 16-byte request over loopback TCP (TCP_NODELAY) answered with 4096 bytes.
//   tcp_fetch server            listens on 127.0.0.1:0, prints "READY port=<p>", serves one client until EOF
//   tcp_fetch client PORT N     N round trips after 200 warm-up ones; prints one latency in ns per line
//   tcp_fetch client-pipelined PORT PAGES WINDOW
//                               the same requests with WINDOW of them in flight on the one connection (a streaming
//                               sequential read's floor; WINDOW 1 is the unpipelined loop): PAGES replies after 200
//                               warm-up ones; prints the elapsed ns of the PAGES replies
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
  int ls = listen_loopback(1);
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
  int s = connect_loopback(port);
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

// Sends request `id` (its first 8 bytes; the server echoes them at the start of the reply).
static void send_request(int s, uint64_t id) {
  char req[REQ] = {0};
  memcpy(req, &id, 8);
  if (io_full(s, req, REQ, 1) != 0) die("write request");
}

// Requests ids [first, first+n) keeping up to `window` of them in flight and reads the n replies in order; returns the
// ns from the first request to the last reply, or 0 after a reply mismatch (reported on stderr).
static uint64_t pipelined_run(int s, uint64_t first, long n, long window) {
  char page[PAGE];
  uint64_t t0 = now_ns();
  long sent = 0;
  for (; sent < n && sent < window; sent++) send_request(s, first + (uint64_t)sent);
  for (long i = 0; i < n; i++) {
    if (io_full(s, page, PAGE, 0) != 0) die("read reply");
    uint64_t id = first + (uint64_t)i;
    if (memcmp(page, &id, 8) != 0) {
      fprintf(stderr, "tcp_fetch: reply mismatch at %ld\n", i);
      return 0;
    }
    if (sent < n) send_request(s, first + (uint64_t)sent++);
  }
  return now_ns() - t0;
}

static int client_pipelined(int port, long n, long window) {
  int s = connect_loopback(port);
  if (pipelined_run(s, 0, WARMUP, window) == 0) return 1;
  uint64_t ns = pipelined_run(s, WARMUP, n, window);
  if (ns == 0) return 1;
  close(s);
  printf("%llu\n", (unsigned long long)ns);
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
  if (argc == 5 && strcmp(argv[1], "client-pipelined") == 0) {
    int port = atoi(argv[2]);
    long n = strtol(argv[3], NULL, 10);
    long window = strtol(argv[4], NULL, 10);
    if (n <= 0 || n > 100000000 || window <= 0 || window > 4096 || port <= 0 || port > 65535) {
      fprintf(stderr, "tcp_fetch: bad arguments\n");
      return 2;
    }
    return client_pipelined(port, n, window);
  }
  fprintf(stderr, "usage: tcp_fetch server | tcp_fetch client PORT N | tcp_fetch client-pipelined PORT PAGES WINDOW\n");
  return 2;
}
