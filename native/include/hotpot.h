/* Hotpot C ABI: map a named dataset of the distributed shared persistent memory and commit it durably.
 *
 * A process connects to its node daemon's unix socket, opens (or creates) a dataset by name and maps windows of
 * it. Loads of pages the node holds cost nothing; pages it does not hold are fetched on first touch (including
 * when the memory is handed to a syscall). Stores are private to the process until hotpot_commit() ships the
 * changed bytes to N nodes; hotpot_rollback() discards them; hotpot_refresh() drops private pages that carry no
 * change so the mapping shows the latest committed data.
 *
 * Return values: 0 on success, else a positive status code equal to the gRPC code numbers
 * (HOTPOT_ABORTED = 10 etc.); hotpot_last_error() then describes the failure (thread-local, valid until the next
 * call on the same thread).
 *
 * If the daemon dies (docs/api.md "What an app sees while its node daemon restarts"): pages the node cache holds
 * stay readable and writes stay private; every request returns HOTPOT_UNAVAILABLE ("the node daemon at <path> is
 * down; reconnecting") at once; touching a page that was never fetched waits for the daemon to come back, at most
 * $HOTPOT_RECONNECT_WAIT_MS (default 15000; read by hotpot_connect, which refuses a bad value), then raises SIGBUS
 * (kernel accesses fail with EFAULT) — never zeros. The library reconnects by itself when a daemon listens on the
 * same socket again, reopens every open dataset and keeps every mapping at its address. Private pages written
 * before the restart cannot be committed: the next commit returns HOTPOT_ABORTED with no conflicts until
 * hotpot_rollback(); a snapshot spanning the restart ends with HOTPOT_ABORTED. One line per event goes to stderr.
 *
 * Requirements: userfaultfd for kernel-mode faults (root, CAP_SYS_PTRACE, or vm.unprivileged_userfaultfd=1).
 * Thread-safety: all functions may be called from any thread; requests on one connection are serialised. Do not
 * write to a dataset's mappings while hotpot_commit/rollback/refresh runs on it. A forked child does not inherit
 * working mappings: connect and map again in the child.
 */
#ifndef HOTPOT_H
#define HOTPOT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes (gRPC numbering). */
#define HOTPOT_OK 0
#define HOTPOT_CANCELLED 1
#define HOTPOT_UNKNOWN 2
#define HOTPOT_INVALID_ARGUMENT 3
#define HOTPOT_DEADLINE_EXCEEDED 4
#define HOTPOT_NOT_FOUND 5
#define HOTPOT_ALREADY_EXISTS 6
#define HOTPOT_PERMISSION_DENIED 7
#define HOTPOT_RESOURCE_EXHAUSTED 8
#define HOTPOT_FAILED_PRECONDITION 9
#define HOTPOT_ABORTED 10
#define HOTPOT_OUT_OF_RANGE 11
#define HOTPOT_UNIMPLEMENTED 12
#define HOTPOT_INTERNAL 13
#define HOTPOT_UNAVAILABLE 14
#define HOTPOT_DATA_LOSS 15
#define HOTPOT_UNAUTHENTICATED 16

/* Dataset modes. */
#define HOTPOT_MODE_MRMW 1 /* multiple readers, multiple writers */
#define HOTPOT_MODE_MRSW 2 /* multiple readers, single writer */

/* Default socket when hotpot_connect() gets NULL: $HOTPOT_SOCKET, else this path. */
#define HOTPOT_DEFAULT_SOCKET "/run/hotpot/node.sock"

#define HOTPOT_MAX_CONFLICTS 64

typedef struct hotpot_conn hotpot_conn;
typedef struct hotpot_dataset hotpot_dataset;

typedef struct hotpot_create_opts {
  uint64_t size;     /* bytes, > 0 */
  uint32_t mode;     /* HOTPOT_MODE_* */
  uint32_t replicas; /* default N for commits, >= 1 */
} hotpot_create_opts;

typedef struct hotpot_dataset_info {
  uint64_t id;
  uint64_t size;
  uint32_t mode;
  uint32_t replicas;
  uint32_t chunk_size;
} hotpot_dataset_info;

typedef struct hotpot_conflict {
  uint64_t offset; /* dataset byte offset */
  uint32_t len;
} hotpot_conflict;

typedef struct hotpot_commit_result {
  uint32_t copies; /* distinct nodes durably holding every committed byte */
  uint32_t replicas; /* N the commit asked for */
  /* 1: applied and visible, but a push failed after the commit point so copies < replicas; the owners copy the
     pages to more live nodes in the background. Not an error: the commit happened. */
  uint32_t under_replicated;
  uint64_t pages;  /* dirty pages submitted */
  uint64_t ranges; /* changed byte ranges shipped */
  uint64_t bytes;  /* changed bytes shipped */
  uint32_t n_conflicts;                         /* total conflicting ranges (on HOTPOT_ABORTED) */
  hotpot_conflict conflicts[HOTPOT_MAX_CONFLICTS]; /* the first min(n_conflicts, 64) of them */
} hotpot_commit_result;

/* Thread-local description of the last failure on this thread ("" if none). */
const char* hotpot_last_error(void);
/* Name of a status code ("ABORTED", ...). */
const char* hotpot_status_name(int code);

/* socket_path NULL: $HOTPOT_SOCKET, else HOTPOT_DEFAULT_SOCKET. */
int hotpot_connect(const char* socket_path, hotpot_conn** out);
/* Releases the handle. Open datasets stay usable; the socket closes when the last of them is closed. */
void hotpot_disconnect(hotpot_conn* conn);

/* Opens dataset `name`; with create_or_null, creates it if it does not exist. Needs read and write permission. */
int hotpot_open(hotpot_conn* conn, const char* name, const hotpot_create_opts* create_or_null, hotpot_dataset** out);
/* Opens dataset `name` for reading: read permission suffices; hotpot_commit on it fails with HOTPOT_PERMISSION_DENIED
 * (writes to the mapping stay private to this process). */
int hotpot_open_readonly(hotpot_conn* conn, const char* name, hotpot_dataset** out);
int hotpot_dataset_info_get(hotpot_dataset* ds, hotpot_dataset_info* out);
/* Maps [offset, offset + length) (offset page-aligned; length 0 = to the end; rounded up to whole pages).
 * Windows of one dataset must not overlap. The memory stays valid until hotpot_close(). */
int hotpot_map(hotpot_dataset* ds, uint64_t offset, uint64_t length, void** addr);
/* Commits every private page of every window to `replicas` nodes (0 = the dataset default). On HOTPOT_ABORTED
 * the private pages are kept and out->conflicts lists the conflicting ranges. out_or_null may be NULL. */
int hotpot_commit(hotpot_dataset* ds, uint32_t replicas, hotpot_commit_result* out_or_null);
/* A byte range of a dataset. */
typedef struct hotpot_range {
  uint64_t offset;
  uint64_t len;
} hotpot_range;

typedef struct hotpot_commit_opts {
  uint32_t replicas;            /* 0 = the dataset default */
  uint32_t n_reads;             /* read validation: HOTPOT_ABORTED if a page holding these bytes changed since the */
  const hotpot_range* reads;    /* last commit/rollback/refresh sync (checked with the commit, atomically)        */
  uint32_t lease_len;           /* MRSW: the lease certificate from acquire (required to write an MRSW dataset) */
  const uint8_t* lease;
  uint32_t has_write_set;       /* non-zero: HOTPOT_FAILED_PRECONDITION if a private page lies outside write_set */
  uint32_t n_write_set;
  const hotpot_range* write_set;
} hotpot_commit_opts;

/* hotpot_commit with read validation, an MRSW lease and/or a declared write set. With no private pages and
 * n_reads > 0 it is a read-only validation. */
int hotpot_commit_ex(hotpot_dataset* ds, const hotpot_commit_opts* opts, hotpot_commit_result* out_or_null);
/* hotpot_commit inside the caller's trace: `traceparent` is a W3C traceparent ("00-<trace id>-<span id>-<flags>")
 * that becomes the parent of the node's commit span; NULL or "" = untraced. HOTPOT_INVALID_ARGUMENT if malformed. */
int hotpot_commit_traced(hotpot_dataset* ds, uint32_t replicas, const char* traceparent,
                         hotpot_commit_result* out_or_null);
/* Discards every private page; the mappings then show the latest committed data. */
int hotpot_rollback(hotpot_dataset* ds);
/* Drops private pages whose bytes equal their base image (no change); keeps changed ones. */
int hotpot_refresh(hotpot_dataset* ds);
/* Unmaps every window and closes the dataset; the handle is freed even when an error is returned. */
int hotpot_close(hotpot_dataset* ds);

/* Snapshot reads (docs/api.md "Snapshot reads").
 *
 * Plain loads from a mapping see the node cache as it changes: between two sync points a concurrent commit can
 * land page by page, so a reader may see part of it (e.g. the debit of a transfer without the credit, when the
 * two accounts live in chunks with different owners). A snapshot brackets loads with the node's publication
 * state of the dataset; if the state did not change, the loads saw every commit whole (all or nothing), even
 * commits spanning several owners:
 *
 *   hotpot_snapshot s;
 *   do {
 *     if (hotpot_snapshot_begin(ds, &s) != HOTPOT_OK) ...;
 *     total = a[0] + a[1];                      // loads only
 *   } while (hotpot_snapshot_end(ds, &s) == HOTPOT_ABORTED);
 *
 * Only committed data is checked: this process's own private (uncommitted) pages are its own writes and are not
 * part of the check. A snapshot is local: begin and end each load one word of a shared page the node maps into
 * the process on first use (a node that cannot provide it is asked over the socket instead). */
typedef struct hotpot_snapshot {
  uint64_t seq; /* opaque: the publication sequence recorded by begin and the daemon connection it came from */
} hotpot_snapshot;

/* Waits until no commit is partly published on this node for the dataset (polling with short sleeps, 50 us
 * doubling to 2 ms) and records the publication state in *snap. HOTPOT_UNAVAILABLE if a commit stays open for
 * about 2 s ("a commit stays open on this node"). */
int hotpot_snapshot_begin(hotpot_dataset* ds, hotpot_snapshot* snap);
/* hotpot_snapshot_begin without waiting: HOTPOT_ABORTED at once if a commit is partly published right now (try
 * again a little later). For callers with their own scheduler (an event loop). */
int hotpot_snapshot_try_begin(hotpot_dataset* ds, hotpot_snapshot* snap);
/* HOTPOT_OK if the publication state still equals the one begin recorded (same seq, no commit open, the same
 * daemon: a restarted daemon's seq starts over, so a snapshot spanning a restart always fails): the loads in
 * between saw every commit whole. HOTPOT_ABORTED if it changed: discard what was read and read again. */
int hotpot_snapshot_end(hotpot_dataset* ds, const hotpot_snapshot* snap);

/* Spelling used in the design notes; same function. */
#define hotpot_dataset_info(ds, out) hotpot_dataset_info_get((ds), (out))

#ifdef __cplusplus
}
#endif

#endif /* HOTPOT_H */
