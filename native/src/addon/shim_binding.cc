// N-API binding of the SDK side (the mmap shim) over the C ABI in include/hotpot.h.
//
// Blocking requests (open, commit, rollback, refresh) run on libuv worker threads and settle a Promise; map,
// close, connect and disconnect are short local round trips on the JS thread. Faults on a mapping are served by
// the node daemon's thread, never by the JS thread, so JS code may touch unfetched pages freely.
//
// Mapped memory is exposed as external ArrayBuffers. Each one holds a reference to its dataset's state, so the
// mapping outlives every live buffer unless shimClose is called, which first DETACHES every buffer (JS then sees a
// zero-length buffer instead of unmapped memory).
#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "addon/bindings.h"
#include "hotpot.h"
#include "wire/traceparent.h"

namespace hotpot {
namespace addon {

namespace {

struct ConnState {
  hotpot_conn* conn = nullptr;
  ~ConnState() {
    if (conn != nullptr) hotpot_disconnect(conn);
  }
};

struct DsState {
  hotpot_dataset* ds = nullptr;
  uint64_t size = 0;
  int busy = 0;  // async operations in flight (JS thread only)
  std::vector<Napi::Reference<Napi::ArrayBuffer>> buffers;  // weak
  ~DsState() {
    // Last reference gone (handle and every buffer collected): nothing in JS can reach the memory any more.
    if (ds != nullptr) (void)hotpot_close(ds);
  }
};

using DsRef = std::shared_ptr<DsState>;

// A C ABI return code and hotpot_last_error() as a Status (the message without its "<CODE>: " prefix).
Status StatusFromRc(int rc, const std::string& last) {
  Code code = (rc > 0 && rc <= static_cast<int>(Code::kUnauthenticated)) ? static_cast<Code>(rc) : Code::kUnknown;
  std::string msg = last;
  std::string prefix = std::string(CodeName(code)) + ": ";
  if (msg.compare(0, prefix.size(), prefix) == 0) msg = msg.substr(prefix.size());
  return Status(code, msg);
}

// Throws the error of a C ABI call that just failed on this thread with `rc`.
Napi::Value ThrowRc(Napi::Env env, int rc) { return Throw(env, StatusFromRc(rc, hotpot_last_error())); }

using ConnRef = std::shared_ptr<ConnState>;

// The JS handle's reference; empty after shimDisconnect. In-flight opens hold their own reference, so the C
// connection is released only when both are gone.
ConnRef* GetConn(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  return v.As<Napi::External<ConnRef>>().Data();
}

DsRef* GetDs(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  return v.As<Napi::External<DsRef>>().Data();
}

// The open dataset behind argument 0, or nullptr with FAILED_PRECONDITION "<fn>: not an open dataset handle" thrown.
DsRef* OpenDsArg(const Napi::CallbackInfo& info, const char* fn) {
  DsRef* r = info.Length() > 0 ? GetDs(info[0]) : nullptr;
  if (r != nullptr && *r && (*r)->ds != nullptr) return r;
  Throw(info.Env(), Code::kFailedPrecondition, std::string(fn) + ": not an open dataset handle");
  return nullptr;
}

const char* ModeName(uint32_t mode) { return mode == HOTPOT_MODE_MRSW ? "MRSW" : "MRMW"; }

// Runs `exec` (a C ABI call) on a libuv pool thread and settles the returned Promise (bindings.h Work). `keep` (a
// dataset, counted busy meanwhile so shimClose refuses) and `keep_conn` stay alive until it settles.
Napi::Promise OnPool(Napi::Env env, std::function<int()> exec, Work::Ok ok, Work::Fail fail, DsRef keep,
                     ConnRef keep_conn = nullptr) {
  if (keep) keep->busy++;
  auto* w = new Work(
      env, "hotpot.shim",
      [exec = std::move(exec)]() {
        int rc = exec();
        // hotpot_last_error is thread-local: read it on the thread that failed.
        return rc == 0 ? Status::Ok() : StatusFromRc(rc, hotpot_last_error());
      },
      std::move(ok), std::move(fail));
  // The settle hook owns both references; it is dropped once the Promise has settled.
  return w
      ->OnSettle([keep, keep_conn]() {
        if (keep) keep->busy--;
      })
      ->Start();
}

Napi::Value ShimConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (info.Length() > 0 && info[0].IsString()) {
    path = info[0].As<Napi::String>().Utf8Value();
  } else if (info.Length() > 0 && !info[0].IsUndefined() && !info[0].IsNull()) {
    return Throw(env, Code::kInvalidArgument, "shimConnect: path must be a string or null");
  }
  hotpot_conn* conn = nullptr;
  int rc = hotpot_connect(path.empty() ? nullptr : path.c_str(), &conn);
  if (rc != 0) return ThrowRc(env, rc);
  auto* ref = new ConnRef(std::make_shared<ConnState>());
  (*ref)->conn = conn;
  return Napi::External<ConnRef>::New(env, ref, [](Napi::Env, ConnRef* r) { delete r; });
}

Napi::Value ShimDisconnect(const Napi::CallbackInfo& info) {
  ConnRef* c = info.Length() > 0 ? GetConn(info[0]) : nullptr;
  if (c == nullptr) return Throw(info.Env(), Code::kInvalidArgument, "shimDisconnect: not a connection handle");
  c->reset();  // open datasets keep the socket until they close
  return info.Env().Undefined();
}

Napi::Value ShimOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ConnRef* c = info.Length() > 0 ? GetConn(info[0]) : nullptr;
  if (c == nullptr || !*c)
    return Throw(env, Code::kFailedPrecondition, "shimOpen: not a connected connection handle");
  if (info.Length() < 2 || !info[1].IsString()) return Throw(env, Code::kInvalidArgument, "shimOpen: name must be a string");
  std::string name = info[1].As<Napi::String>().Utf8Value();
  bool create = false;
  hotpot_create_opts opts{};
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    create = true;
    if (!ToU64OrBigInt(o.Get("size"), &opts.size) || opts.size == 0)
      return Throw(env, Code::kInvalidArgument, "shimOpen: create.size must be a positive integer");
    opts.mode = HOTPOT_MODE_MRMW;
    Napi::Value mode = o.Get("mode");
    if (mode.IsString()) {
      std::string m = mode.As<Napi::String>().Utf8Value();
      if (m == "MRSW") opts.mode = HOTPOT_MODE_MRSW;
      else if (m != "MRMW") return Throw(env, Code::kInvalidArgument, "shimOpen: create.mode must be 'MRMW' or 'MRSW'");
    } else if (!mode.IsUndefined()) {
      return Throw(env, Code::kInvalidArgument, "shimOpen: create.mode must be 'MRMW' or 'MRSW'");
    }
    opts.replicas = 1;
    Napi::Value rep = o.Get("replicas");
    uint64_t r = 1;
    if (!rep.IsUndefined() && (!ToU64OrBigInt(rep, &r) || r == 0 || r > 64))
      return Throw(env, Code::kInvalidArgument, "shimOpen: create.replicas must be 1..64");
    opts.replicas = static_cast<uint32_t>(r);
  } else if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) {
    return Throw(env, Code::kInvalidArgument, "shimOpen: create must be an object or null");
  }
  bool read_only = false;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsBoolean()) return Throw(env, Code::kInvalidArgument, "shimOpen: readOnly must be a boolean");
    read_only = info[3].As<Napi::Boolean>().Value();
  }
  if (read_only && create)
    return Throw(env, Code::kInvalidArgument, "shimOpen: a read-only open cannot create the dataset");
  hotpot_conn* conn = (*c)->conn;
  auto out = std::make_shared<hotpot_dataset*>(nullptr);
  return OnPool(
      env,
      [conn, name, create, opts, out, read_only]() {
        return read_only ? hotpot_open_readonly(conn, name.c_str(), out.get())
                         : hotpot_open(conn, name.c_str(), create ? &opts : nullptr, out.get());
      },
      [out](Napi::Env e) -> Napi::Value {
        hotpot_dataset_info di{};
        (void)hotpot_dataset_info(*out, &di);
        auto* ref = new DsRef(std::make_shared<DsState>());
        (*ref)->ds = *out;
        (*ref)->size = di.size;
        *out = nullptr;
        Napi::Object res = Napi::Object::New(e);
        res.Set("dataset", Napi::External<DsRef>::New(e, ref, [](Napi::Env, DsRef* r) { delete r; }));
        Napi::Object i = Napi::Object::New(e);
        i.Set("id", Napi::Number::New(e, static_cast<double>(di.id)));
        i.Set("size", Napi::Number::New(e, static_cast<double>(di.size)));
        i.Set("mode", Napi::String::New(e, ModeName(di.mode)));
        i.Set("replicas", Napi::Number::New(e, di.replicas));
        i.Set("chunkSize", Napi::Number::New(e, di.chunk_size));
        res.Set("info", i);
        return res;
      },
      nullptr, nullptr, *c);
}

Napi::Value ShimMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DsRef* r = OpenDsArg(info, "shimMap");
  if (r == nullptr) return env.Undefined();
  uint64_t offset = 0, length = 0;
  if (info.Length() < 3 || !ToU64OrBigInt(info[1], &offset) || !ToU64OrBigInt(info[2], &length))
    return Throw(env, Code::kInvalidArgument, "shimMap: offset and length must be non-negative integers");
  void* addr = nullptr;
  int rc = hotpot_map((*r)->ds, offset, length, &addr);
  if (rc != 0) return ThrowRc(env, rc);
  uint64_t bytes = length == 0 ? (*r)->size - offset : length;
  // The buffer keeps the dataset state (and so the mapping) alive until it is collected or detached by close.
  auto* hold = new DsRef(*r);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, addr, static_cast<size_t>(bytes), [](Napi::Env, void*, DsRef* h) { delete h; }, hold);
  (*r)->buffers.push_back(Napi::Weak(ab));
  return ab;
}

Napi::Value DsAsync(const Napi::CallbackInfo& info, const char* fn, std::function<int(hotpot_dataset*)> op) {
  Napi::Env env = info.Env();
  DsRef* r = OpenDsArg(info, fn);
  if (r == nullptr) return env.Undefined();
  hotpot_dataset* ds = (*r)->ds;
  return OnPool(env, [ds, op]() { return op(ds); }, nullptr, nullptr, *r);
}

// [{offset, length}] -> ranges; false (with *why) on anything else.
bool ToRanges(const Napi::Value& v, std::vector<hotpot_range>* out, std::string* why) {
  if (!v.IsArray()) {
    *why = "must be an array of {offset, length}";
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() > 65536) {
    *why = "has more than 65536 ranges";
    return false;
  }
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsObject()) {
      *why = "must be an array of {offset, length}";
      return false;
    }
    Napi::Object o = e.As<Napi::Object>();
    hotpot_range r{};
    if (!ToU64OrBigInt(o.Get("offset"), &r.offset) || !ToU64OrBigInt(o.Get("length"), &r.len) || r.len == 0) {
      *why = "entry " + std::to_string(i) + " needs integer offset >= 0 and length > 0";
      return false;
    }
    out->push_back(r);
  }
  return true;
}

Napi::Value ShimCommit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DsRef* r = OpenDsArg(info, "shimCommit");
  if (r == nullptr) return env.Undefined();
  uint64_t replicas = 0;
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull() && (!ToU64OrBigInt(info[1], &replicas) || replicas > 64))
    return Throw(env, Code::kInvalidArgument, "shimCommit: replicas must be 0..64 (0 = dataset default)");
  // Optional third argument: { reads?: Range[], lease?: Buffer, writeSet?: Range[] }.
  struct Extras {
    std::vector<hotpot_range> reads, write_set;
    std::vector<uint8_t> lease;
    bool has_write_set = false;
    wire::TraceContext trace;  // the SDK span's context (W3C traceparent), parent of the node's commit span
  };
  auto ex = std::make_shared<Extras>();
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    std::string why;
    if (o.Has("reads") && !o.Get("reads").IsUndefined() && !ToRanges(o.Get("reads"), &ex->reads, &why))
      return Throw(env, Code::kInvalidArgument, "shimCommit: reads " + why);
    if (o.Has("writeSet") && !o.Get("writeSet").IsUndefined()) {
      if (!ToRanges(o.Get("writeSet"), &ex->write_set, &why))
        return Throw(env, Code::kInvalidArgument, "shimCommit: writeSet " + why);
      ex->has_write_set = true;
    }
    if (o.Has("lease") && !o.Get("lease").IsUndefined()) {
      if (!o.Get("lease").IsBuffer()) return Throw(env, Code::kInvalidArgument, "shimCommit: lease must be a Buffer");
      Napi::Buffer<uint8_t> b = o.Get("lease").As<Napi::Buffer<uint8_t>>();
      ex->lease.assign(b.Data(), b.Data() + b.Length());
    }
    Napi::Value tp = o.Get("traceparent");
    if (!tp.IsUndefined() && !tp.IsNull() &&
        (!tp.IsString() || !wire::ParseTraceparent(tp.As<Napi::String>().Utf8Value(), &ex->trace)))
      return Throw(env, Code::kInvalidArgument, "shimCommit: traceparent must be a W3C traceparent string");
  }
  hotpot_dataset* ds = (*r)->ds;
  auto res = std::make_shared<hotpot_commit_result>();
  return OnPool(
      env,
      [ds, replicas, res, ex]() {
        hotpot_commit_opts opts{};
        opts.replicas = static_cast<uint32_t>(replicas);
        opts.n_reads = static_cast<uint32_t>(ex->reads.size());
        opts.reads = ex->reads.data();
        opts.lease_len = static_cast<uint32_t>(ex->lease.size());
        opts.lease = ex->lease.data();
        opts.has_write_set = ex->has_write_set ? 1 : 0;
        opts.n_write_set = static_cast<uint32_t>(ex->write_set.size());
        opts.write_set = ex->write_set.data();
        wire::TraceScope trace_scope(ex->trace);  // frames of this commit carry the SDK's context
        return hotpot_commit_ex(ds, &opts, res.get());
      },
      [res](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("copies", Napi::Number::New(e, res->copies));
        o.Set("replicas", Napi::Number::New(e, res->replicas));
        o.Set("underReplicated", Napi::Boolean::New(e, res->under_replicated != 0));
        o.Set("pages", Napi::Number::New(e, static_cast<double>(res->pages)));
        o.Set("ranges", Napi::Number::New(e, static_cast<double>(res->ranges)));
        o.Set("bytes", Napi::Number::New(e, static_cast<double>(res->bytes)));
        return o;
      },
      [res](Napi::Env e, Napi::Error& err) {
        Napi::Object details = Napi::Object::New(e);
        uint32_t n = res->n_conflicts < HOTPOT_MAX_CONFLICTS ? res->n_conflicts : HOTPOT_MAX_CONFLICTS;
        Napi::Array arr = Napi::Array::New(e, n);
        for (uint32_t i = 0; i < n; i++) {
          Napi::Object c = Napi::Object::New(e);
          c.Set("offset", Napi::Number::New(e, static_cast<double>(res->conflicts[i].offset)));
          c.Set("len", Napi::Number::New(e, res->conflicts[i].len));
          arr.Set(i, c);
        }
        details.Set("conflicts", arr);
        details.Set("totalConflicts", Napi::Number::New(e, res->n_conflicts));
        err.Set("details", details);
      },
      *r);
}

Napi::Value ShimRollback(const Napi::CallbackInfo& info) {
  return DsAsync(info, "shimRollback", [](hotpot_dataset* ds) { return hotpot_rollback(ds); });
}

Napi::Value ShimRefresh(const Napi::CallbackInfo& info) {
  return DsAsync(info, "shimRefresh", [](hotpot_dataset* ds) { return hotpot_refresh(ds); });
}

// Snapshot reads are short local round trips on the JS thread (a hot read path: no worker thread, no Promise).
// Begin never waits: with a commit partly published it returns null and the SDK schedules the retry, so the
// event loop is never blocked while a commit stays open.
Napi::Value SeqValue(Napi::Env env, uint64_t seq) {
  if (seq <= kMaxSafeInteger) return Napi::Number::New(env, static_cast<double>(seq));
  return Napi::BigInt::New(env, seq);
}

Napi::Value ShimSnapshotBegin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DsRef* r = OpenDsArg(info, "shimSnapshotBegin");
  if (r == nullptr) return env.Undefined();
  hotpot_snapshot snap{};
  int rc = hotpot_snapshot_try_begin((*r)->ds, &snap);
  if (rc == HOTPOT_ABORTED) return env.Null();
  if (rc != 0) return ThrowRc(env, rc);
  return SeqValue(env, snap.seq);
}

Napi::Value ShimSnapshotEnd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DsRef* r = OpenDsArg(info, "shimSnapshotEnd");
  if (r == nullptr) return env.Undefined();
  hotpot_snapshot snap{};
  if (info.Length() < 2 || !ToU64OrBigInt(info[1], &snap.seq))
    return Throw(env, Code::kInvalidArgument, "shimSnapshotEnd: seq must be the value shimSnapshotBegin returned");
  int rc = hotpot_snapshot_end((*r)->ds, &snap);
  if (rc == HOTPOT_ABORTED) return Napi::Boolean::New(env, false);
  if (rc != 0) return ThrowRc(env, rc);
  return Napi::Boolean::New(env, true);
}

Napi::Value ShimClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DsRef* r = info.Length() > 0 ? GetDs(info[0]) : nullptr;
  if (r == nullptr || !*r) return Throw(env, Code::kInvalidArgument, "shimClose: not a dataset handle");
  DsState* s = r->get();
  if (s->ds == nullptr) return env.Undefined();  // already closed
  if (s->busy > 0)
    return Throw(env, Code::kFailedPrecondition, "shimClose: a commit/rollback/refresh on this dataset is in flight");
  // Detach first: no JS view may outlive the mapping.
  for (auto& ref : s->buffers) {
    if (ref.IsEmpty()) continue;
    Napi::ArrayBuffer ab = ref.Value();
    if (!ab.IsEmpty() && !ab.IsDetached()) ab.Detach();
  }
  s->buffers.clear();
  hotpot_dataset* ds = s->ds;
  s->ds = nullptr;
  int rc = hotpot_close(ds);
  if (rc != 0) return ThrowRc(env, rc);
  return env.Undefined();
}

}  // namespace

void InitShimBinding(Napi::Env env, Napi::Object exports) {
  exports.Set("shimConnect", Napi::Function::New(env, ShimConnect, "shimConnect"));
  exports.Set("shimDisconnect", Napi::Function::New(env, ShimDisconnect, "shimDisconnect"));
  exports.Set("shimOpen", Napi::Function::New(env, ShimOpen, "shimOpen"));
  exports.Set("shimMap", Napi::Function::New(env, ShimMap, "shimMap"));
  exports.Set("shimCommit", Napi::Function::New(env, ShimCommit, "shimCommit"));
  exports.Set("shimRollback", Napi::Function::New(env, ShimRollback, "shimRollback"));
  exports.Set("shimRefresh", Napi::Function::New(env, ShimRefresh, "shimRefresh"));
  exports.Set("shimClose", Napi::Function::New(env, ShimClose, "shimClose"));
  exports.Set("shimSnapshotBegin", Napi::Function::New(env, ShimSnapshotBegin, "shimSnapshotBegin"));
  exports.Set("shimSnapshotEnd", Napi::Function::New(env, ShimSnapshotEnd, "shimSnapshotEnd"));
}

}  // namespace addon
}  // namespace hotpot
