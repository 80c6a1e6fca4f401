// Raw floor for concurrent durable replicated writes with group commit (bench/concurrent.ts): CLIENTS client
// threads, each with its own connections, send 4 KiB writes to two replica processes over loopback TCP
// (TCP_NODELAY) in parallel and wait for both acks. A replica reads every request available on all its
// connections, pwrite()s each to its client's slot of the data file, fdatasync()s once for all of them and then
// acks them all — what a replica that batches durability cannot beat.
//   persist2_batch replica DATAFILE  listens on 127.0.0.1:0, prints "READY port=<p>", serves clients until all
//                                    that connected have closed
//   persist2_batch client PORT1 PORT2 CLIENTS SECONDS
//       every thread does 20 warm-up writes, then all run a closed loop for SECONDS together; prints
//       "# clients=C writes=N elapsed_ns=E sent=S fsyncs=F1,F2" (writes: measured; sent: with warm-up; Fk: replica
//       k's fdatasync count over its whole life, carried in its acks) and one latency in ns per line
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FLOOR_NAME "persist2_batch"
#include "floor.h"

#define HDR 16 // u64 sequence number, u32 slot, 4 bytes zero
#define PAGE 4096
#define MSG (HDR + PAGE)
#define ACK 16 // u64 sequence number, u64 the replica's fdatasyncs so far
#define SLOTS 256
#define MAXCONN 512
#define MAXCLIENTS 128
#define WARMUP 20

// ------------------------------------------------------------------------------------------------------ replica

struct conn {
  int fd; // -1 once closed
  size_t have;
  char buf[MSG];
};

struct pending {
  int conn;
  uint64_t seq;
};

static struct conn conns[MAXCONN];

static int replica(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) die("open data file");
  // Preallocate so each write is an overwrite (no metadata update), as in a page file.
  static char zero[PAGE];
  for (int i = 0; i < SLOTS; i++)
    if (pwrite(fd, zero, PAGE, (off_t)i * PAGE) != PAGE) die("preallocate");
  if (fsync(fd) != 0) die("fsync");
  int ls = listen_loopback(MAXCLIENTS);

  struct pollfd pf[MAXCONN + 1];
  int nconn = 0, open_conns = 0;
  size_t cap = MAXCONN, npending = 0;
  struct pending *pend = calloc(cap, sizeof *pend);
  if (!pend) die("calloc");
  uint64_t fsyncs = 0;
  for (;;) {
    int np = 0;
    pf[np++] = (struct pollfd){.fd = ls, .events = POLLIN};
    for (int i = 0; i < nconn; i++)
      if (conns[i].fd >= 0) pf[np++] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
    if (poll(pf, (nfds_t)np, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (pf[0].revents & POLLIN) {
      int c = accept(ls, NULL, NULL);
      if (c < 0) die("accept");
      if (nconn == MAXCONN) {
        fprintf(stderr, "persist2_batch: more than %d connections\n", MAXCONN);
        return 1;
      }
      nodelay(c);
      conns[nconn++] = (struct conn){.fd = c, .have = 0};
      open_conns++;
    }
    // Everything that arrived on any connection joins this batch (non-blocking reads until none has more).
    npending = 0;
    for (int i = 0; i < nconn; i++) {
      struct conn *k = &conns[i];
      while (k->fd >= 0) {
        ssize_t n = recv(k->fd, k->buf + k->have, MSG - k->have, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) { // EOF or reset: this client is done
          close(k->fd);
          k->fd = -1;
          open_conns--;
          break;
        }
        k->have += (size_t)n;
        if (k->have < MSG) continue;
        k->have = 0;
        uint64_t seq;
        uint32_t slot;
        memcpy(&seq, k->buf, 8);
        memcpy(&slot, k->buf + 8, 4);
        if (pwrite(fd, k->buf + HDR, PAGE, (off_t)(slot % SLOTS) * PAGE) != PAGE) die("pwrite");
        if (npending == cap) {
          cap *= 2;
          pend = realloc(pend, cap * sizeof *pend);
          if (!pend) die("realloc");
        }
        pend[npending++] = (struct pending){.conn = i, .seq = seq};
      }
    }
    if (npending > 0) {
      if (fdatasync(fd) != 0) die("fdatasync");
      fsyncs++;
      for (size_t j = 0; j < npending; j++) {
        struct conn *k = &conns[pend[j].conn];
        if (k->fd < 0) continue;
        char ack[ACK];
        memcpy(ack, &pend[j].seq, 8);
        memcpy(ack + 8, &fsyncs, 8);
        if (io_full(k->fd, ack, ACK, 1) != 0) die("write ack");
      }
    }
    if (nconn > 0 && open_conns == 0) break;
  }
  free(pend);
  close(ls);
  close(fd);
  return 0;
}

// ------------------------------------------------------------------------------------------------------- client

struct worker {
  pthread_t thread;
  int id;
  int ports[2];
  uint64_t seconds;
  uint64_t *lat;
  size_t n, cap;
  uint64_t sent;
  uint64_t fsyncs[2];
  uint64_t start, end;
};

static pthread_barrier_t start_line;

static int dial(int port) {
  int s = connect_loopback(port);
  return s;
}

static uint64_t write_once(struct worker *w, int s[2], char *msg, uint64_t seq) {
  char ack[ACK];
  uint32_t slot = (uint32_t)w->id;
  memcpy(msg, &seq, 8);
  memcpy(msg + 8, &slot, 4);
  memset(msg + HDR, (int)(seq & 0xff), PAGE);
  uint64_t t0 = now_ns();
  for (int k = 0; k < 2; k++)
    if (io_full(s[k], msg, MSG, 1) != 0) die("write");
  for (int k = 0; k < 2; k++) {
    if (io_full(s[k], ack, ACK, 0) != 0) die("read ack");
    uint64_t got, f;
    memcpy(&got, ack, 8);
    memcpy(&f, ack + 8, 8);
    if (got != seq) {
      fprintf(stderr, "persist2_batch: client %d: ack for %llu, expected %llu\n", w->id, (unsigned long long)got,
              (unsigned long long)seq);
      exit(1);
    }
    if (f > w->fsyncs[k]) w->fsyncs[k] = f;
  }
  w->sent++;
  return now_ns() - t0;
}

static void *run_worker(void *arg) {
  struct worker *w = arg;
  int s[2] = {dial(w->ports[0]), dial(w->ports[1])};
  char msg[MSG] = {0};
  uint64_t seq = 0;
  for (int i = 0; i < WARMUP; i++) write_once(w, s, msg, seq++);
  int rc = pthread_barrier_wait(&start_line);
  if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD) {
    errno = rc;
    die("pthread_barrier_wait");
  }
  w->start = now_ns();
  uint64_t until = w->start + w->seconds * 1000000000u;
  do {
    uint64_t ns = write_once(w, s, msg, seq++);
    if (w->n == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 4096;
      w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
      if (!w->lat) die("realloc");
    }
    w->lat[w->n++] = ns;
  } while (now_ns() < until);
  w->end = now_ns();
  close(s[0]);
  close(s[1]);
  return NULL;
}

static int client(int p1, int p2, int clients, int seconds) {
  struct worker *ws = calloc((size_t)clients, sizeof *ws);
  if (!ws) die("calloc");
  int rc = pthread_barrier_init(&start_line, NULL, (unsigned)clients);
  if (rc != 0) {
    errno = rc;
    die("pthread_barrier_init");
  }
  for (int i = 0; i < clients; i++) {
    ws[i] = (struct worker){.id = i, .ports = {p1, p2}, .seconds = (uint64_t)seconds};
    rc = pthread_create(&ws[i].thread, NULL, run_worker, &ws[i]);
    if (rc != 0) {
      errno = rc;
      die("pthread_create");
    }
  }
  uint64_t start = UINT64_MAX, end = 0, writes = 0, sent = 0, fs[2] = {0, 0};
  for (int i = 0; i < clients; i++) {
    rc = pthread_join(ws[i].thread, NULL);
    if (rc != 0) {
      errno = rc;
      die("pthread_join");
    }
    if (ws[i].start < start) start = ws[i].start;
    if (ws[i].end > end) end = ws[i].end;
    writes += ws[i].n;
    sent += ws[i].sent;
    for (int k = 0; k < 2; k++)
      if (ws[i].fsyncs[k] > fs[k]) fs[k] = ws[i].fsyncs[k];
  }
  printf("# clients=%d writes=%llu elapsed_ns=%llu sent=%llu fsyncs=%llu,%llu\n", clients, (unsigned long long)writes,
         (unsigned long long)(end - start), (unsigned long long)sent, (unsigned long long)fs[0],
         (unsigned long long)fs[1]);
  for (int i = 0; i < clients; i++) {
    for (size_t j = 0; j < ws[i].n; j++) printf("%llu\n", (unsigned long long)ws[i].lat[j]);
    free(ws[i].lat);
  }
  free(ws);
  pthread_barrier_destroy(&start_line);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "replica") == 0) return replica(argv[2]);
  if (argc == 6 && strcmp(argv[1], "client") == 0) {
    int p1 = atoi(argv[2]), p2 = atoi(argv[3]), clients = atoi(argv[4]), seconds = atoi(argv[5]);
    if (p1 <= 0 || p1 > 65535 || p2 <= 0 || p2 > 65535 || clients < 1 || clients > MAXCLIENTS || seconds < 1 ||
        seconds > 3600) {
      fprintf(stderr, "persist2_batch: bad arguments\n");
      return 2;
    }
    return client(p1, p2, clients, seconds);
  }
  fprintf(stderr, "usage: persist2_batch replica DATAFILE | persist2_batch client PORT1 PORT2 CLIENTS SECONDS\n");
  return 2;
}
