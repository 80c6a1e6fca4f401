// N-API binding of the engine (node daemon side). JS names: createEngine, engineDataPort, engineSetNodeId,
// engineSetMembers, engineOpenDataset, engineCompleteOpen, engineStats, engineCounterTable, engineDumpPage,
// engineShutdown.
// Failures are thrown as JS Errors with .code = gRPC status name (bindings.h MakeError). Engine threads reach
// JavaScript only through ThreadSafeFunction::NonBlockingCall (never blocking a data-path thread on the loop).
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon/bindings.h"
#include "common/page.h"
#include "engine/engine.h"

namespace hotpot {
namespace addon {
namespace {

using engine::Engine;

struct OpenReq {
  uint64_t request_id = 0;
  std::string name;
  bool has_create = false;
  engine::CreateOptions create;
  engine::PeerCred cred;
};

// Owns the engine and the two thread-safe functions. Shared with the callbacks so a late call after shutdown
// finds `released` set instead of a dead TSFN.
struct Callbacks {
  std::mutex mu;
  bool released = false;
  bool has_open = false, has_log = false;
  Napi::ThreadSafeFunction open_fn, log_fn;

  void Release() {
    std::lock_guard<std::mutex> l(mu);
    if (released) return;
    released = true;
    if (has_open) open_fn.Release();
    if (has_log) log_fn.Release();
  }
};

struct Handle {
  std::unique_ptr<Engine> engine;
  std::shared_ptr<Callbacks> cb;
  void Shutdown() {
    if (engine) engine->Shutdown();
    if (cb) cb->Release();
  }
  ~Handle() { Shutdown(); }
};

// Every engine counter with its names, in the order of engine/counters.def (the one list of them).
struct Counter {
  uint64_t engine::EngineCounters::*field;
  const char* name;
  const char* js_name;
  const char* metric;
  const char* unit;
  const char* description;
};
constexpr Counter kCounters[] = {
#define HOTPOT_COUNTER(field, js_name, metric, unit, description) \
  {&engine::EngineCounters::field, #field, js_name, metric, unit, description},
#include "engine/counters.def"
#undef HOTPOT_COUNTER
};

Napi::Value CreateEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return ThrowInvalid(env, "createEngine: options object required");
  Napi::Object o = info[0].As<Napi::Object>();
  std::string err, durability = "disk";
  engine::EngineOptions eo;
  uint64_t node_id = 0, port = 0, chunk = eo.chunk_size_bytes, timeout = uint64_t(eo.request_timeout.count());
  uint64_t owner_wait = uint64_t(eo.owner_wait.count());
  if (!GetUint(o, "nodeId", 0xffffffffu, &node_id, &err) || !GetString(o, "clusterSecret", &eo.cluster_secret, &err) ||
      !GetString(o, "poolDir", &eo.pool_dir, &err, true) || !GetString(o, "dataDir", &eo.data_dir, &err) ||
      !GetString(o, "durability", &durability, &err) || !GetString(o, "dataHost", &eo.data_host, &err) ||
      !GetUint(o, "dataPort", 65535, &port, &err) || !GetString(o, "shimSocketPath", &eo.shim_socket_path, &err) ||
      !GetUint(o, "chunkSizeBytes", 0xffffffffu, &chunk, &err) ||
      !GetUint(o, "requestTimeoutMs", 3600 * 1000, &timeout, &err) ||
      !GetUint(o, "ownerWaitMs", 3600 * 1000, &owner_wait, &err))
    return ThrowInvalid(env, "createEngine: " + err);
  if (durability == "memory") eo.durability = pool::Durability::kMemory;
  else if (durability == "disk") eo.durability = pool::Durability::kDisk;
  else return ThrowInvalid(env, "createEngine: durability must be 'memory' or 'disk'");
  if (chunk == 0 || chunk % kPageSize != 0)
    return ThrowInvalid(env, "createEngine: chunkSizeBytes must be a positive multiple of " + std::to_string(kPageSize));
  if (timeout == 0) return ThrowInvalid(env, "createEngine: requestTimeoutMs must be > 0");
  eo.data_port = uint16_t(port);
  eo.chunk_size_bytes = uint32_t(chunk);
  eo.request_timeout = std::chrono::milliseconds(timeout);
  eo.owner_wait = std::chrono::milliseconds(owner_wait);
  if (!GetString(o, "transport", &eo.transport, &err)) return ThrowInvalid(env, "createEngine: " + err);
  if (eo.transport.empty()) eo.transport = "tcp";
  if (eo.transport != "tcp" && eo.transport != "rdma")
    return ThrowInvalid(env, "createEngine: transport must be 'tcp' or 'rdma'");
  // Frame protection is on unless the node runs with --insecure (protectFrames: false).
  Napi::Value pf = o.Get("protectFrames");
  if (!pf.IsUndefined() && !pf.IsBoolean()) return ThrowInvalid(env, "createEngine: protectFrames must be a boolean");
  eo.protect_frames = pf.IsUndefined() || pf.As<Napi::Boolean>().Value();
  // The node's TLS material for the data-plane handshake: { certPem, keyPem, caPem }, or absent (--insecure).
  Napi::Value tls = o.Get("tls");
  if (!tls.IsUndefined() && !tls.IsNull()) {
    if (!tls.IsObject()) return ThrowInvalid(env, "createEngine: tls must be an object { certPem, keyPem, caPem }");
    Napi::Object t = tls.As<Napi::Object>();
    if (!GetString(t, "certPem", &eo.tls_cert_pem, &err, true) ||
        !GetString(t, "keyPem", &eo.tls_key_pem, &err, true) || !GetString(t, "caPem", &eo.tls_ca_pem, &err, true))
      return ThrowInvalid(env, "createEngine: tls." + err);
    constexpr size_t kMaxPem = 1 << 20;  // a CA bundle of many certificates still fits
    for (const std::string* pem : {&eo.tls_cert_pem, &eo.tls_key_pem, &eo.tls_ca_pem})
      if (pem->empty() || pem->size() > kMaxPem)
        return ThrowInvalid(env, "createEngine: tls.certPem, keyPem and caPem must be 1 byte to 1 MiB of PEM");
  }

  auto cb = std::make_shared<Callbacks>();
  Napi::Value on_open = o.Get("onOpenRequest"), on_log = o.Get("onLog");
  if (on_open.IsFunction()) {
    cb->open_fn = Napi::ThreadSafeFunction::New(env, on_open.As<Napi::Function>(), "hotpot-engine-open", 0, 1);
    cb->has_open = true;
  } else if (!on_open.IsUndefined() && !on_open.IsNull()) {
    return ThrowInvalid(env, "createEngine: onOpenRequest must be a function");
  }
  if (on_log.IsFunction()) {
    cb->log_fn = Napi::ThreadSafeFunction::New(env, on_log.As<Napi::Function>(), "hotpot-engine-log", 0, 1);
    cb->has_log = true;
  } else if (!on_log.IsUndefined() && !on_log.IsNull()) {
    cb->Release();
    return ThrowInvalid(env, "createEngine: onLog must be a function");
  }

  std::weak_ptr<Callbacks> weak = cb;
  if (cb->has_log) {
    eo.log = [weak](const std::string& line) {
      auto c = weak.lock();
      if (!c) return;
      std::lock_guard<std::mutex> l(c->mu);
      if (c->released) return;
      auto* s = new std::string(line);
      napi_status st = c->log_fn.NonBlockingCall(s, [](Napi::Env e, Napi::Function fn, std::string* d) {
        if (e != nullptr && fn != nullptr) fn.Call({Napi::String::New(e, *d)});
        delete d;
      });
      if (st != napi_ok) delete s;
    };
  }
  engine::OpenRequestFn open_fn;
  if (cb->has_open) {
    open_fn = [weak](uint64_t rid, const std::string& name, const engine::CreateOptions* create,
                     const engine::PeerCred& cred) {
      auto c = weak.lock();
      if (!c) return;
      auto* r = new OpenReq();
      r->request_id = rid;
      r->name = name;
      r->cred = cred;
      if (create) {
        r->has_create = true;
        r->create = *create;
      }
      std::lock_guard<std::mutex> l(c->mu);
      if (c->released) {
        delete r;
        return;  // the engine's Open times out / is woken by Shutdown
      }
      napi_status st = c->open_fn.NonBlockingCall(r, [](Napi::Env e, Napi::Function fn, OpenReq* d) {
        if (e != nullptr && fn != nullptr) {
          Napi::Object req = Napi::Object::New(e);
          req.Set("requestId", Napi::Number::New(e, double(d->request_id)));
          req.Set("name", Napi::String::New(e, d->name));
          if (d->has_create) {
            Napi::Object cr = Napi::Object::New(e);
            cr.Set("sizeBytes", Napi::Number::New(e, double(d->create.size_bytes)));
            cr.Set("mode", Napi::String::New(e, ModeName(d->create.mode)));
            cr.Set("replicas", Napi::Number::New(e, d->create.replicas));
            req.Set("create", cr);
          } else {
            req.Set("create", e.Null());
          }
          req.Set("uid", Napi::Number::New(e, d->cred.uid));
          req.Set("gid", Napi::Number::New(e, d->cred.gid));
          req.Set("pid", Napi::Number::New(e, d->cred.pid));
          Napi::Array groups = Napi::Array::New(e, d->cred.groups.size());
          for (size_t i = 0; i < d->cred.groups.size(); i++)
            groups.Set(static_cast<uint32_t>(i), Napi::Number::New(e, d->cred.groups[i]));
          req.Set("groups", groups);
          req.Set("readOnly", Napi::Boolean::New(e, d->cred.read_only));
          fn.Call({req});
        }
        delete d;
      });
      if (st != napi_ok) delete r;
    };
  }

  std::unique_ptr<Engine> eng;
  Status st = Engine::Start(eo, std::move(open_fn), &eng);
  if (!st.ok()) {
    cb->Release();
    return Throw(env, st);
  }
  if (node_id != 0) eng->SetNodeId(uint32_t(node_id));
  auto* h = new Handle{std::move(eng), cb};
  // The finalizer shuts the engine down if JS drops the handle without engineShutdown.
  return Napi::External<Handle>::New(env, h, [](Napi::Env, Handle* x) { delete x; });
}

Napi::Value EngineDataPort(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  return Napi::Number::New(info.Env(), eng->data_port());
}

Napi::Value EngineSetNodeId(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsNumber()) return ThrowInvalid(env, "engineSetNodeId: node id must be a number");
  uint64_t id = 0;
  if (!ToUint(info[1], 0xffffffffu, &id) || id == 0)
    return ThrowInvalid(env, "engineSetNodeId: node id must be an integer in 1..2^32-1");
  eng->SetNodeId(uint32_t(id));
  return env.Undefined();
}

Napi::Value EngineSetMembers(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsArray())
    return ThrowInvalid(env, "engineSetMembers(handle, epoch, members[])");
  double epoch = info[1].As<Napi::Number>().DoubleValue();
  if (!(epoch >= 0) || epoch > double(kMaxSafeInteger)) return ThrowInvalid(env, "engineSetMembers: bad epoch");
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<engine::Member> ms;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) return ThrowInvalid(env, "engineSetMembers: member " + std::to_string(i) + " is not an object");
    Napi::Object m = v.As<Napi::Object>();
    std::string err;
    uint64_t id = 0;
    engine::Member mem;
    if (!GetUint(m, "id", 0xffffffffu, &id, &err, true) || !GetString(m, "dataAddress", &mem.data_address, &err, true) ||
        !GetUint(m, "stateEpoch", kMaxSafeInteger, &mem.state_epoch, &err) ||
        !GetString(m, "storeId", &mem.store_id, &err) || !GetString(m, "identity", &mem.identity, &err) ||
        !GetUint(m, "storeReplacedEpoch", kMaxSafeInteger, &mem.store_replaced_epoch, &err) ||
        !GetUint(m, "replicatedThroughEpoch", kMaxSafeInteger, &mem.replicated_through_epoch, &err))
      return ThrowInvalid(env, "engineSetMembers: member " + std::to_string(i) + ": " + err);
    if (mem.identity.size() > 256)
      return ThrowInvalid(env, "engineSetMembers: member " + std::to_string(i) + ": identity longer than 256 bytes");
    mem.id = uint32_t(id);
    mem.alive = m.Get("alive").ToBoolean().Value();
    ms.push_back(std::move(mem));
  }
  eng->SetMembers(uint64_t(epoch), ms);
  return env.Undefined();
}

Napi::Value EngineOpenDataset(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsObject()) return ThrowInvalid(env, "engineOpenDataset(handle, info)");
  Napi::Object o = info[1].As<Napi::Object>();
  engine::DatasetInfo di;
  std::string err, mode = "mrmw";
  uint64_t id = 0, size = 0, replicas = 1, chunk = 0, generation = 0;
  if (!GetUint(o, "id", kMaxSafeInteger, &id, &err, true) || !GetString(o, "name", &di.name, &err) ||
      !GetUint(o, "sizeBytes", kMaxSafeInteger, &size, &err, true) || !GetString(o, "mode", &mode, &err) ||
      !GetUint(o, "replicas", 0xffffffffu, &replicas, &err) ||
      !GetUint(o, "chunkSizeBytes", 0xffffffffu, &chunk, &err) ||
      !GetUint(o, "generation", kMaxSafeInteger, &generation, &err))
    return ThrowInvalid(env, "engineOpenDataset: " + err);
  if (!ParseMode(mode, &di.mode)) return ThrowInvalid(env, "engineOpenDataset: mode must be 'mrmw' or 'mrsw'");
  di.id = id;
  di.size_bytes = size;
  di.replicas = uint32_t(replicas);
  di.chunk_size_bytes = uint32_t(chunk);
  di.generation = generation;
  Napi::Value chunks = o.Get("chunks");
  if (!chunks.IsArray()) return ThrowInvalid(env, "engineOpenDataset: chunks must be an array");
  Napi::Array arr = chunks.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) return ThrowInvalid(env, "engineOpenDataset: chunk " + std::to_string(i) + " is not an object");
    Napi::Object c = v.As<Napi::Object>();
    uint64_t index = 0, owner = 0;
    if (!GetUint(c, "index", 0xffffffffu, &index, &err, true) || !GetUint(c, "owner", 0xffffffffu, &owner, &err, true))
      return ThrowInvalid(env, "engineOpenDataset: chunk " + std::to_string(i) + ": " + err);
    engine::ChunkInfo ci;
    ci.index = uint32_t(index);
    ci.owner = uint32_t(owner);
    Napi::Value reps = c.Get("replicas");
    if (reps.IsArray()) {
      Napi::Array ra = reps.As<Napi::Array>();
      for (uint32_t k = 0; k < ra.Length(); k++) {
        Napi::Value r = ra.Get(k);
        if (!r.IsNumber()) return ThrowInvalid(env, "engineOpenDataset: chunk replicas must be node ids");
        ci.replicas.push_back(r.As<Napi::Number>().Uint32Value());
      }
    }
    Napi::Value oa = c.Get("ownerAlive");
    ci.owner_alive = oa.IsUndefined() ? true : oa.ToBoolean().Value();
    Napi::Value orc = c.Get("ownerRecovering");
    ci.owner_recovering = !orc.IsUndefined() && orc.ToBoolean().Value();
    // Optional (absent = 0). Versions are era << kEraShift and up in 64 bits, so an era past 24 bits cannot be.
    uint64_t era = 0;
    if (!GetUint(c, "era", (uint64_t(1) << (64 - engine::kEraShift)) - 1, &era, &err))
      return ThrowInvalid(env, "engineOpenDataset: chunk " + std::to_string(i) + ": " + err);
    ci.era = uint32_t(era);
    // Optional: [{firstPage, count}], sorted and not overlapping (the dispatcher checked them; checked again here).
    Napi::Value lost = c.Get("lostPages");
    if (!lost.IsUndefined()) {
      if (!lost.IsArray()) return ThrowInvalid(env, "engineOpenDataset: chunk lostPages must be an array");
      Napi::Array la = lost.As<Napi::Array>();
      uint64_t next = 0;
      for (uint32_t k = 0; k < la.Length(); k++) {
        Napi::Value r = la.Get(k);
        uint64_t lf = 0, lc = 0;
        if (!r.IsObject() || !GetUint(r.As<Napi::Object>(), "firstPage", kMaxSafeInteger, &lf, &err, true) ||
            !GetUint(r.As<Napi::Object>(), "count", kMaxSafeInteger, &lc, &err, true) || lc == 0 || lf < next)
          return ThrowInvalid(env, "engineOpenDataset: chunk " + std::to_string(i) +
                                       ": lostPages must be sorted, non-empty {firstPage, count} ranges " + err);
        ci.lost.push_back(engine::PageSpan{lf, lc});
        next = lf + lc;
      }
    }
    di.chunks.push_back(std::move(ci));
  }
  Status st = eng->OpenDataset(di);
  if (!st.ok()) return Throw(env, st);
  return env.Undefined();
}

Code CodeFromName(const std::string& name) {
  for (int c = 1; c <= 16; c++)
    if (name == CodeName(Code(c))) return Code(c);
  return Code::kUnknown;
}

Napi::Value EngineCompleteOpen(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsObject())
    return ThrowInvalid(env, "engineCompleteOpen(handle, requestId, result)");
  uint64_t rid = uint64_t(info[1].As<Napi::Number>().DoubleValue());
  Napi::Object r = info[2].As<Napi::Object>();
  if (r.Get("ok").ToBoolean().Value()) {
    std::string err;
    uint64_t ds = 0;
    if (!GetUint(r, "datasetId", kMaxSafeInteger, &ds, &err, true)) return ThrowInvalid(env, "engineCompleteOpen: " + err);
    eng->CompleteOpen(rid, Status::Ok(), ds);
  } else {
    std::string code = "UNKNOWN", message = "open failed", err;
    if (!GetString(r, "code", &code, &err) || !GetString(r, "message", &message, &err))
      return ThrowInvalid(env, "engineCompleteOpen: " + err);
    Code c = CodeFromName(code);
    if (c == Code::kOk) c = Code::kUnknown;
    eng->CompleteOpen(rid, Status(c, message), 0);
  }
  return env.Undefined();
}

Napi::Value EngineStats(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  engine::EngineStats s = eng->Stats();
  auto num = [&](uint64_t v) { return Napi::Number::New(env, double(v)); };
  Napi::Object o = Napi::Object::New(env);
  o.Set("nodeId", num(s.node_id));
  o.Set("dataPort", num(s.data_port));
  Napi::Object c = Napi::Object::New(env);
  for (const Counter& k : kCounters) c.Set(k.js_name, num(s.counters.*k.field));
  o.Set("counters", c);
  Napi::Object p = Napi::Object::New(env);
  p.Set("bytesResident", num(s.pool.bytes_resident));
  p.Set("redoInFlight", num(s.pool.redo_in_flight));
  p.Set("syncs", num(s.pool.syncs));
  p.Set("syncedCommits", num(s.pool.synced_commits));
  Napi::Array pds = Napi::Array::New(env, s.pool.datasets.size());
  for (size_t i = 0; i < s.pool.datasets.size(); i++) {
    const pool::DatasetPoolStats& d = s.pool.datasets[i];
    Napi::Object x = Napi::Object::New(env);
    x.Set("datasetId", num(d.dataset_id));
    x.Set("sizeBytes", num(d.size_bytes));
    x.Set("pagesOwned", num(d.pages_owned));
    x.Set("pagesCommitted", num(d.pages_committed));
    x.Set("pagesRedundant", num(d.pages_redundant));
    pds.Set(uint32_t(i), x);
  }
  p.Set("datasets", pds);
  o.Set("pool", p);
  o.Set("openSessions", num(s.open_sessions));
  o.Set("lockedPages", num(s.locked_pages));
  Napi::Array chunks = Napi::Array::New(env, s.chunks.size());
  for (size_t i = 0; i < s.chunks.size(); i++) {
    const engine::ChunkStat& cs = s.chunks[i];
    Napi::Object x = Napi::Object::New(env);
    x.Set("datasetId", num(cs.dataset_id));
    x.Set("chunk", num(cs.chunk));
    x.Set("owned", Napi::Boolean::New(env, cs.owned));
    x.Set("pagesOwned", num(cs.pages_owned));
    x.Set("pagesCommitted", num(cs.pages_committed));
    x.Set("pagesRedundant", num(cs.pages_redundant));
    x.Set("ownerNodeId", num(cs.owner));
    Napi::Array ch = Napi::Array::New(env, cs.committed_holders.size());
    for (size_t j = 0; j < cs.committed_holders.size(); j++) ch.Set(uint32_t(j), num(cs.committed_holders[j]));
    x.Set("committedHolders", ch);
    Napi::Array rh = Napi::Array::New(env, cs.redundant_holders.size());
    for (size_t j = 0; j < cs.redundant_holders.size(); j++) rh.Set(uint32_t(j), num(cs.redundant_holders[j]));
    x.Set("redundantHolders", rh);
    Napi::Array dh = Napi::Array::New(env, cs.down_holders.size());
    for (size_t j = 0; j < cs.down_holders.size(); j++) dh.Set(uint32_t(j), num(cs.down_holders[j]));
    x.Set("downHolders", dh);
    x.Set("replicaCount", num(cs.replica_count));
    x.Set("replicasWanted", num(cs.replicas_wanted));
    x.Set("underReplicated", Napi::Boolean::New(env, cs.under_replicated));
    chunks.Set(uint32_t(i), x);
  }
  o.Set("chunks", chunks);
  return o;
}

// engineCounterTable() -> [{name, jsName, metric, unit, description}]: every counter of engineStats().counters
// (keyed by jsName), with the OpenTelemetry metric it is exported as.
Napi::Value EngineCounterTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, std::size(kCounters));
  for (size_t i = 0; i < std::size(kCounters); i++) {
    const Counter& k = kCounters[i];
    Napi::Object x = Napi::Object::New(env);
    x.Set("name", Napi::String::New(env, k.name));
    x.Set("jsName", Napi::String::New(env, k.js_name));
    x.Set("metric", Napi::String::New(env, k.metric));
    x.Set("unit", Napi::String::New(env, k.unit));
    x.Set("description", Napi::String::New(env, k.description));
    out.Set(uint32_t(i), x);
  }
  return out;
}

// engineSetLeaseDeadline(h, unixMs): until when this node's membership lease is surely valid (0 = none).
Napi::Value EngineSetLeaseDeadline(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsNumber()) return ThrowInvalid(env, "engineSetLeaseDeadline(handle, unixMs)");
  const double ms = info[1].As<Napi::Number>().DoubleValue();
  if (!(ms >= 0) || ms > double(kMaxSafeInteger)) return ThrowInvalid(env, "engineSetLeaseDeadline: unixMs out of range");
  eng->SetLeaseDeadline(uint64_t(ms));
  return env.Undefined();
}

// engineEndLease(h): this node is leaving the cluster; its lease ends now and for good (Engine::EndLease).
Napi::Value EngineEndLease(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  eng->EndLease();
  return info.Env().Undefined();
}

// engineHideSnapshots(h): a planned stop begins; this node serves no snapshot read from now on.
Napi::Value EngineHideSnapshots(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  eng->HideSnapshots();
  return info.Env().Undefined();
}

// engineSetMrswLeaseFloor(h, epoch): MRSW leases of this node below this fencing epoch ended at the dispatcher.
Napi::Value EngineSetMrswLeaseFloor(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsNumber()) return ThrowInvalid(env, "engineSetMrswLeaseFloor(handle, epoch)");
  const double epoch = info[1].As<Napi::Number>().DoubleValue();
  if (!(epoch >= 0) || epoch > double(kMaxSafeInteger) || epoch != double(uint64_t(epoch)))
    return ThrowInvalid(env, "engineSetMrswLeaseFloor: epoch must be a non-negative integer");
  eng->SetMrswLeaseFloor(uint64_t(epoch));
  return env.Undefined();
}

// engineSetRevokedCertificates(h, fingerprints: string[]): the certificates the data plane refuses (SHA-256).
Napi::Value EngineSetRevokedCertificates(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsArray())
    return ThrowInvalid(env, "engineSetRevokedCertificates(handle, fingerprints[])");
  Napi::Array a = info[1].As<Napi::Array>();
  if (a.Length() > 1000000) return ThrowInvalid(env, "engineSetRevokedCertificates: too many fingerprints");
  std::vector<std::string> fps;
  fps.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    if (!v.IsString()) return ThrowInvalid(env, "engineSetRevokedCertificates: fingerprints must be strings");
    fps.push_back(v.As<Napi::String>().Utf8Value());
  }
  Status st = eng->SetRevokedCertificates(fps);
  if (!st.ok()) return Throw(env, st);
  return env.Undefined();
}

// engineStore(h) -> {id, incarnation, created}: this node's store identity (for Join).
Napi::Value EngineStore(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  const pool::StoreIdentity s = eng->Store();
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", Napi::String::New(env, s.id));
  o.Set("incarnation", Napi::Number::New(env, double(s.incarnation)));
  o.Set("created", Napi::Boolean::New(env, s.created));
  return o;
}

// engineReplicatedThrough(h) -> the membership epoch up to which every page this node owns was found at N live
// copies (Engine::ReplicatedThrough; sent with every heartbeat).
Napi::Value EngineReplicatedThrough(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  return Napi::Number::New(info.Env(), double(eng->ReplicatedThrough()));
}

// engineRecoveredChunks(h) -> [{datasetId, chunk, lostPages: [{firstPage, count}]}]: owned chunks recovered from
// their holders that the chunk map still shows as recovering (to report to the dispatcher), with their pages no node
// held.
Napi::Value EngineRecoveredChunks(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  const std::vector<engine::RecoveredChunk> done = eng->RecoveredChunks();
  Napi::Array out = Napi::Array::New(env, done.size());
  for (size_t i = 0; i < done.size(); i++) {
    Napi::Object x = Napi::Object::New(env);
    x.Set("datasetId", Napi::Number::New(env, double(done[i].ref.dataset_id)));
    x.Set("chunk", Napi::Number::New(env, done[i].ref.chunk));
    Napi::Array lost = Napi::Array::New(env, done[i].lost.size());
    for (size_t k = 0; k < done[i].lost.size(); k++) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("firstPage", Napi::Number::New(env, double(done[i].lost[k].first)));
      r.Set("count", Napi::Number::New(env, double(done[i].lost[k].count)));
      lost.Set(uint32_t(k), r);
    }
    x.Set("lostPages", lost);
    out.Set(uint32_t(i), x);
  }
  return out;
}

Napi::Value EngineDumpPage(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, nullptr);
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsNumber())
    return ThrowInvalid(env, "engineDumpPage(handle, datasetId, page)");
  double ds = info[1].As<Napi::Number>().DoubleValue(), page = info[2].As<Napi::Number>().DoubleValue();
  if (!(ds >= 0) || !(page >= 0) || ds > double(kMaxSafeInteger) || page > double(kMaxSafeInteger))
    return ThrowInvalid(env, "engineDumpPage: datasetId and page must be non-negative integers");
  engine::PageDump d;
  Status st = eng->DumpPage(uint64_t(ds), uint64_t(page), &d);
  if (!st.ok()) return Throw(env, st);
  static const char* kStates[] = {"absent", "committed", "redundant", "owned"};
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", Napi::String::New(env, kStates[uint8_t(d.state) & 3]));
  o.Set("version", Napi::Number::New(env, double(d.version)));
  o.Set("data", Napi::Buffer<uint8_t>::Copy(env, d.data.data(), d.data.size()));
  return o;
}

Napi::Value EngineShutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsExternal()) return ThrowInvalid(env, "engineShutdown(handle)");
  Handle* h = info[0].As<Napi::External<Handle>>().Data();
  if (h) h->Shutdown();  // idempotent; the handle's memory is freed by its finalizer
  return env.Undefined();
}

}  // namespace

engine::Engine* EngineFromValue(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  Handle* h = v.As<Napi::External<Handle>>().Data();
  return (h && h->engine) ? h->engine.get() : nullptr;
}

void InitEngineBinding(Napi::Env env, Napi::Object exports) {
  exports.Set("createEngine", Napi::Function::New(env, CreateEngine, "createEngine"));
  exports.Set("engineDataPort", Napi::Function::New(env, EngineDataPort, "engineDataPort"));
  exports.Set("engineSetNodeId", Napi::Function::New(env, EngineSetNodeId, "engineSetNodeId"));
  exports.Set("engineSetMembers", Napi::Function::New(env, EngineSetMembers, "engineSetMembers"));
  exports.Set("engineOpenDataset", Napi::Function::New(env, EngineOpenDataset, "engineOpenDataset"));
  exports.Set("engineCompleteOpen", Napi::Function::New(env, EngineCompleteOpen, "engineCompleteOpen"));
  exports.Set("engineStats", Napi::Function::New(env, EngineStats, "engineStats"));
  exports.Set("engineCounterTable", Napi::Function::New(env, EngineCounterTable, "engineCounterTable"));
  exports.Set("engineStore", Napi::Function::New(env, EngineStore, "engineStore"));
  exports.Set("engineSetLeaseDeadline", Napi::Function::New(env, EngineSetLeaseDeadline, "engineSetLeaseDeadline"));
  exports.Set("engineEndLease", Napi::Function::New(env, EngineEndLease, "engineEndLease"));
  exports.Set("engineHideSnapshots", Napi::Function::New(env, EngineHideSnapshots, "engineHideSnapshots"));
  exports.Set("engineSetMrswLeaseFloor", Napi::Function::New(env, EngineSetMrswLeaseFloor, "engineSetMrswLeaseFloor"));
  exports.Set("engineSetRevokedCertificates",
              Napi::Function::New(env, EngineSetRevokedCertificates, "engineSetRevokedCertificates"));
  exports.Set("engineReplicatedThrough",
              Napi::Function::New(env, EngineReplicatedThrough, "engineReplicatedThrough"));
  exports.Set("engineRecoveredChunks", Napi::Function::New(env, EngineRecoveredChunks, "engineRecoveredChunks"));
  exports.Set("engineDumpPage", Napi::Function::New(env, EngineDumpPage, "engineDumpPage"));
  exports.Set("engineShutdown", Napi::Function::New(env, EngineShutdown, "engineShutdown"));
}

}  // namespace addon
}  // namespace hotpot
