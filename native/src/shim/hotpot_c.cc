// The C ABI (include/hotpot.h) over shim::Connection / shim::Dataset. No C++ type or exception crosses it.
#include "hotpot.h"

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

int hotpot_close(hotpot_dataset* ds) {
  if (ds == nullptr) return 0;
  hotpot::Status st = ds->d->Close();
  delete ds;
  return Result(st);
}

}  // extern "C"
