// The C ABI (include/hotpot.h) over shim::Connection / shim::Dataset. No C++ type or exception crosses it.
#include "hotpot.h"

#include <errno.h>
#include <time.h>

#include <algorithm>
#include <string>

#include "shim/shim.h"
#include "wire/traceparent.h"

struct hotpot_conn {
  std::shared_ptr<hotpot::shim::Connection> c;
};

struct hotpot_dataset {
  std::unique_ptr<hotpot::shim::Dataset> d;
};

namespace {

thread_local std::string g_last_error;

int Fail(const hotpot::Status& st) {
  g_last_error = st.ToString();
  return static_cast<int>(st.code());
}

int Result(const hotpot::Status& st) {
  if (st.ok()) return 0;
  return Fail(st);
}

int BadArg(const char* what) { return Fail(hotpot::Status(hotpot::Code::kInvalidArgument, what)); }

// Snapshot begin polls while a commit is partly published: short sleeps first (publication of one commit takes
// microseconds to a network round trip), then at most every 2 ms, for about 2 s in all.
constexpr uint64_t kSnapshotFirstSleepNs = 50'000;
constexpr uint64_t kSnapshotMaxSleepNs = 2'000'000;
constexpr uint64_t kSnapshotWaitNs = 2'000'000'000;

uint64_t MonotonicNs() {
  timespec ts{};
  (void)::clock_gettime(CLOCK_MONOTONIC, &ts);  // CLOCK_MONOTONIC cannot fail with a valid timespec
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

void SleepNs(uint64_t ns) {
  timespec req{static_cast<time_t>(ns / 1'000'000'000ull), static_cast<long>(ns % 1'000'000'000ull)};
  timespec rem{};
  while (::nanosleep(&req, &rem) != 0 && errno == EINTR) req = rem;
}

// hotpot_snapshot.seq: the publication seq (47 bits in the shared word, so the socket probe's seq is cut to the
// same width; 2^47 changes of one dataset on one node do not happen) and, above it, the daemon connection's
// generation, so a snapshot spanning a daemon restart (whose seq starts over) never compares equal.
constexpr int kSeqBits = 47;
uint64_t SnapshotToken(const hotpot::shim::PublicationState& ps) {
  return (ps.seq & ((uint64_t(1) << kSeqBits) - 1)) | (ps.generation << kSeqBits);
}

// One probe: OK with *snap recorded, ABORTED while a commit is open, else the request's error.
int SnapshotProbe(hotpot_dataset* ds, hotpot_snapshot* snap) {
  hotpot::shim::PublicationState ps;
  hotpot::Status st = ds->d->Publication(&ps);
  if (!st.ok()) return Fail(st);
  if (ps.open_commits > 0)
    return Fail(hotpot::Status(hotpot::Code::kAborted, "a commit is partly published on this node (" +
                                                           std::to_string(ps.open_commits) + " open); try again"));
  snap->seq = SnapshotToken(ps);
  return 0;
}

}  // namespace

extern "C" {

const char* hotpot_last_error(void) { return g_last_error.c_str(); }

const char* hotpot_status_name(int code) {
  if (code < 0 || code > static_cast<int>(hotpot::Code::kUnauthenticated)) return "UNKNOWN";
  return hotpot::CodeName(static_cast<hotpot::Code>(code));
}

int hotpot_connect(const char* socket_path, hotpot_conn** out) {
  if (out == nullptr) return BadArg("hotpot_connect: out is NULL");
  *out = nullptr;
  std::shared_ptr<hotpot::shim::Connection> c;
  hotpot::Status st = hotpot::shim::Connect(socket_path != nullptr ? socket_path : "", &c);
  if (!st.ok()) return Fail(st);
  *out = new hotpot_conn{std::move(c)};
  return 0;
}

void hotpot_disconnect(hotpot_conn* conn) { delete conn; }

int hotpot_open(hotpot_conn* conn, const char* name, const hotpot_create_opts* create_or_null, hotpot_dataset** out) {
  if (conn == nullptr || name == nullptr || out == nullptr) return BadArg("hotpot_open: NULL argument");
  *out = nullptr;
  hotpot::shim::CreateSpec spec;
  if (create_or_null != nullptr) {
    spec.size = create_or_null->size;
    spec.mode = create_or_null->mode;
    spec.replicas = create_or_null->replicas;
  }
  std::unique_ptr<hotpot::shim::Dataset> d;
  hotpot::Status st = hotpot::shim::Dataset::Open(conn->c, name, create_or_null != nullptr ? &spec : nullptr, &d);
  if (!st.ok()) return Fail(st);
  *out = new hotpot_dataset{std::move(d)};
  return 0;
}

int hotpot_open_readonly(hotpot_conn* conn, const char* name, hotpot_dataset** out) {
  if (conn == nullptr || name == nullptr || out == nullptr) return BadArg("hotpot_open_readonly: NULL argument");
  *out = nullptr;
  std::unique_ptr<hotpot::shim::Dataset> d;
  hotpot::Status st = hotpot::shim::Dataset::Open(conn->c, name, nullptr, &d, /*read_only=*/true);
  if (!st.ok()) return Fail(st);
  *out = new hotpot_dataset{std::move(d)};
  return 0;
}

int hotpot_dataset_info_get(hotpot_dataset* ds, hotpot_dataset_info* out) {
  if (ds == nullptr || out == nullptr) return BadArg("hotpot_dataset_info: NULL argument");
  const auto& i = ds->d->info();
  out->id = i.id;
  out->size = i.size;
  out->mode = i.mode;
  out->replicas = i.replicas;
  out->chunk_size = i.chunk_size;
  return 0;
}

int hotpot_map(hotpot_dataset* ds, uint64_t offset, uint64_t length, void** addr) {
  if (ds == nullptr || addr == nullptr) return BadArg("hotpot_map: NULL argument");
  *addr = nullptr;
  return Result(ds->d->Map(offset, length, addr, nullptr));
}

int hotpot_commit(hotpot_dataset* ds, uint32_t replicas, hotpot_commit_result* out_or_null) {
  hotpot_commit_opts opts{};
  opts.replicas = replicas;
  return hotpot_commit_ex(ds, &opts, out_or_null);
}

int hotpot_commit_ex(hotpot_dataset* ds, const hotpot_commit_opts* opts, hotpot_commit_result* out_or_null) {
  if (ds == nullptr) return BadArg("hotpot_commit_ex: NULL dataset");
  if (opts == nullptr) return BadArg("hotpot_commit_ex: NULL options");
  if ((opts->n_reads > 0 && opts->reads == nullptr) || (opts->lease_len > 0 && opts->lease == nullptr) ||
      (opts->n_write_set > 0 && opts->write_set == nullptr))
    return BadArg("hotpot_commit_ex: NULL array with a non-zero length");
  hotpot::shim::CommitOptions co;
  for (uint32_t i = 0; i < opts->n_reads; i++) co.reads.push_back({opts->reads[i].offset, opts->reads[i].len});
  co.lease.assign(opts->lease, opts->lease + opts->lease_len);
  co.has_write_set = opts->has_write_set != 0;
  for (uint32_t i = 0; i < opts->n_write_set; i++)
    co.write_set.push_back({opts->write_set[i].offset, opts->write_set[i].len});
  hotpot::shim::CommitOutcome o;
  hotpot::Status st = ds->d->Commit(opts->replicas, &o, &co);
  if (out_or_null != nullptr) {
    *out_or_null = hotpot_commit_result{};
    out_or_null->copies = o.copies;
    out_or_null->replicas = o.replicas;
    out_or_null->under_replicated = st.ok() && o.copies < o.replicas ? 1 : 0;
    out_or_null->pages = o.pages;
    out_or_null->ranges = o.ranges;
    out_or_null->bytes = o.bytes;
    out_or_null->n_conflicts = static_cast<uint32_t>(o.conflicts.size());
    size_t n = std::min<size_t>(o.conflicts.size(), HOTPOT_MAX_CONFLICTS);
    for (size_t i = 0; i < n; i++) out_or_null->conflicts[i] = hotpot_conflict{o.conflicts[i].offset, o.conflicts[i].len};
  }
  return Result(st);
}

int hotpot_commit_traced(hotpot_dataset* ds, uint32_t replicas, const char* traceparent,
                         hotpot_commit_result* out_or_null) {
  hotpot::wire::TraceContext tc;
  if (traceparent != nullptr && traceparent[0] != '\0' && !hotpot::wire::ParseTraceparent(traceparent, &tc))
    return BadArg("hotpot_commit_traced: traceparent must be a W3C traceparent 00-<32 hex>-<16 hex>-<2 hex>");
  hotpot::wire::TraceScope scope(tc);
  return hotpot_commit(ds, replicas, out_or_null);
}

int hotpot_rollback(hotpot_dataset* ds) {
  if (ds == nullptr) return BadArg("hotpot_rollback: NULL dataset");
  return Result(ds->d->Rollback());
}

int hotpot_refresh(hotpot_dataset* ds) {
  if (ds == nullptr) return BadArg("hotpot_refresh: NULL dataset");
  return Result(ds->d->Refresh(nullptr));
}

int hotpot_snapshot_try_begin(hotpot_dataset* ds, hotpot_snapshot* snap) {
  if (ds == nullptr || snap == nullptr) return BadArg("hotpot_snapshot_try_begin: NULL argument");
  return SnapshotProbe(ds, snap);
}

int hotpot_snapshot_begin(hotpot_dataset* ds, hotpot_snapshot* snap) {
  if (ds == nullptr || snap == nullptr) return BadArg("hotpot_snapshot_begin: NULL argument");
  const uint64_t deadline = MonotonicNs() + kSnapshotWaitNs;
  uint64_t sleep_ns = kSnapshotFirstSleepNs;
  for (;;) {
    int rc = SnapshotProbe(ds, snap);
    if (rc != HOTPOT_ABORTED) return rc;
    if (MonotonicNs() >= deadline) {
      return Fail(hotpot::Status(hotpot::Code::kUnavailable,
                                 "a commit stays open on this node: no snapshot could begin within 2 s"));
    }
    SleepNs(sleep_ns);
    sleep_ns = std::min(sleep_ns * 2, kSnapshotMaxSleepNs);
  }
}

int hotpot_snapshot_end(hotpot_dataset* ds, const hotpot_snapshot* snap) {
  if (ds == nullptr || snap == nullptr) return BadArg("hotpot_snapshot_end: NULL argument");
  hotpot::shim::PublicationState ps;
  hotpot::Status st = ds->d->Publication(&ps);
  if (!st.ok()) return Fail(st);
  if (SnapshotToken(ps) != snap->seq || ps.open_commits > 0)
    return Fail(hotpot::Status(hotpot::Code::kAborted, "the dataset changed on this node during the snapshot; read again"));
  return 0;
}

int hotpot_close(hotpot_dataset* ds) {
  if (ds == nullptr) return 0;
  hotpot::Status st = ds->d->Close();
  delete ds;
  return Result(st);
}

}  // extern "C"
