// Raw floor for a durable replicated write: the client sends 4 KiB to two replica processes over loopback TCP
// (TCP_NODELAY) in parallel; each replica pwrite()s it to its data file, fdatasync()s and acks; the client waits
// for both acks.
//   persist2 replica DATAFILE [nosync]  listens on 127.0.0.1:0, prints "READY port=<p>", serves one client until EOF
//   persist2 client PORT1 PORT2 N     N writes after 50 warm-up ones; prints one latency in ns per line
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FLOOR_NAME "persist2"
#include "floor.h"

#define HDR 16
#define PAGE 4096
#define ACK 16
#define SLOTS 256
#define WARMUP 50

static int replica(const char *path, int sync) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) die("open data file");
  // Preallocate so each write is an overwrite (no metadata update), as in a page file.
  char page[HDR + PAGE];
  memset(page, 0, sizeof page);
  for (int i = 0; i < SLOTS; i++)
    if (pwrite(fd, page, PAGE, (off_t)i * PAGE) != PAGE) die("preallocate");
  if (fsync(fd) != 0) die("fsync");
  int ls = listen_loopback(1);
  int c = accept(ls, NULL, NULL);
  if (c < 0) die("accept");
  nodelay(c);
  char ack[ACK] = {0};
  while (io_full(c, page, sizeof page, 0) == 0) {
    uint64_t seq;
    memcpy(&seq, page, 8);
    if (pwrite(fd, page + HDR, PAGE, (off_t)(seq % SLOTS) * PAGE) != PAGE) die("pwrite");
    if (sync && fdatasync(fd) != 0) die("fdatasync");
    memcpy(ack, &seq, 8);
    if (io_full(c, ack, ACK, 1) != 0) die("write ack");
  }
  close(c);
  close(ls);
  close(fd);
  return 0;
}

static int dial(int port) {
  int s = connect_loopback(port);
  return s;
}

static int client(int p1, int p2, long n) {
  int s[2] = {dial(p1), dial(p2)};
  char msg[HDR + PAGE], ack[ACK];
  uint64_t *lat = calloc((size_t)n, sizeof *lat);
  if (!lat) die("calloc");
  for (long i = -WARMUP; i < n; i++) {
    uint64_t seq = (uint64_t)(i + WARMUP);
    memcpy(msg, &seq, 8);
    memset(msg + HDR, (int)(seq & 0xff), PAGE);
    uint64_t t0 = now_ns();
    for (int k = 0; k < 2; k++)
      if (io_full(s[k], msg, sizeof msg, 1) != 0) die("write");
    for (int k = 0; k < 2; k++) {
      if (io_full(s[k], ack, ACK, 0) != 0) die("read ack");
      if (memcmp(ack, &seq, 8) != 0) {
        fprintf(stderr, "persist2: ack mismatch at %ld\n", i);
        return 1;
      }
    }
    uint64_t t1 = now_ns();
    if (i >= 0) lat[i] = t1 - t0;
  }
  close(s[0]);
  close(s[1]);
  for (long i = 0; i < n; i++) printf("%llu\n", (unsigned long long)lat[i]);
  free(lat);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "replica") == 0) return replica(argv[2], 1);
  if (argc == 4 && strcmp(argv[1], "replica") == 0 && strcmp(argv[3], "nosync") == 0) return replica(argv[2], 0);
  if (argc == 5 && strcmp(argv[1], "client") == 0) {
    int p1 = atoi(argv[2]), p2 = atoi(argv[3]);
    long n = strtol(argv[4], NULL, 10);
    if (n <= 0 || n > 10000000 || p1 <= 0 || p1 > 65535 || p2 <= 0 || p2 > 65535) {
      fprintf(stderr, "persist2: bad arguments\n");
      return 2;
    }
    return client(p1, p2, n);
  }
  fprintf(stderr, "usage: persist2 replica DATAFILE [nosync] | persist2 client PORT1 PORT2 N\n");
  return 2;
}
