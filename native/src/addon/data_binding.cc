// N-API binding of the engine's session API (engine::ShimBackend) for the node's gRPC Data service. The gRPC
// path uses exactly what the mmap shim server uses — Open, sessions, base images, EnsurePages and Commit — so
// there is one commit protocol. JS names: engineOpen, engineOpenSession, engineCloseSession,
// engineResyncSession, engineEnsurePages, engineBaseImage, engineReadCommitted, engineCommitSession.
//
// Calls that may wait on the network or on the control plane (Open, EnsurePages, ReadCommitted, Commit) run on
// the libuv pool (AsyncWorker) and settle a Promise; the others are local and synchronous. Failures are JS Errors
// with .code = gRPC status name (bindings.h MakeError); an ABORTED commit carries .details.conflicts.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <string>
#include <utility>
#include <vector>

#include "addon/bindings.h"
#include "common/page.h"
#include "common/peer_cred.h"
#include "engine/engine.h"

namespace hotpot {
namespace addon {
namespace {

constexpr uint32_t kMaxBasePages = 4096;     // 16 MiB per engineBaseImage call
constexpr uint32_t kMaxEnsurePages = 1u << 20;  // 4 GiB per engineEnsurePages call
constexpr uint32_t kMaxReplicas = 64;           // as the shim server
constexpr size_t kMaxLeaseBytes = 64 * 1024;    // as the shim protocol and the PREPARE decoder

// Runs `exec` on the libuv pool and settles the returned Promise (bindings.h Work), holding the engine handle
// (argument 0) meanwhile so its finalizer cannot shut the engine down under the call.
Napi::Promise OnPool(const Napi::CallbackInfo& info, Work::Exec exec, Work::Ok ok = nullptr, Work::Fail fail = nullptr) {
  auto* w = new Work(info.Env(), "hotpot.data", std::move(exec), std::move(ok), std::move(fail));
  return w->Keep(info[0])->Start();
}

// engineOpen(h, name, create: {sizeBytes, mode, replicas} | null, caller: {uid, gid}) -> Promise<{datasetId,
// sizeBytes, mode, replicas, chunkSizeBytes}>. Resolves (and creates) through the control plane exactly as an app's
// open does, checked (and a created dataset owned) as the caller: the gRPC principal's uid:gid.
Napi::Value EngineOpen(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineOpen");
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsString()) return Throw(env, Code::kInvalidArgument, "engineOpen: name must be a string");
  std::string name = info[1].As<Napi::String>().Utf8Value();
  bool has_create = false;
  engine::CreateOptions create;
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    has_create = true;
    uint64_t size = 0, replicas = 1;
    if (!ToU64(o.Get("sizeBytes"), &size) || size == 0)
      return Throw(env, Code::kInvalidArgument, "engineOpen: create.sizeBytes must be a positive integer");
    Napi::Value rep = o.Get("replicas");
    if (!rep.IsUndefined() && (!ToU64(rep, &replicas) || replicas == 0 || replicas > kMaxReplicas))
      return Throw(env, Code::kInvalidArgument, "engineOpen: create.replicas must be 1..64");
    Napi::Value mode = o.Get("mode");
    std::string m = mode.IsString() ? mode.As<Napi::String>().Utf8Value() : (mode.IsUndefined() ? "mrmw" : "");
    if (!ParseMode(m, &create.mode))
      return Throw(env, Code::kInvalidArgument, "engineOpen: create.mode must be 'mrmw' or 'mrsw'");
    create.size_bytes = size;
    create.replicas = static_cast<uint32_t>(replicas);
  } else if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) {
    return Throw(env, Code::kInvalidArgument, "engineOpen: create must be an object or null");
  }
  // The caller's uid:gid come from its authenticated principal (certificate or the unix socket's SO_PEERCRED);
  // a gRPC caller has no pid here.
  engine::PeerCred cred;
  if (info.Length() < 4 || !info[3].IsObject()) return Throw(env, Code::kInvalidArgument, "engineOpen: caller must be {uid, gid}");
  {
    Napi::Object c = info[3].As<Napi::Object>();
    uint64_t uid = 0, gid = 0;
    if (!ToU64(c.Get("uid"), &uid) || !ToU64(c.Get("gid"), &gid) || uid > 0xfffffffeu || gid > 0xfffffffeu)
      return Throw(env, Code::kInvalidArgument, "engineOpen: caller.uid and caller.gid must be 0..4294967294");
    cred.uid = static_cast<uid_t>(uid);
    cred.gid = static_cast<gid_t>(gid);
    Napi::Value ro = c.Get("readOnly");
    if (!ro.IsUndefined() && !ro.IsBoolean())
      return Throw(env, Code::kInvalidArgument, "engineOpen: caller.readOnly must be a boolean");
    cred.read_only = ro.IsBoolean() && ro.As<Napi::Boolean>().Value();
    Napi::Value gs = c.Get("groups");
    if (!gs.IsUndefined()) {
      if (!gs.IsArray() || gs.As<Napi::Array>().Length() > kMaxPeerGroups)
        return Throw(env, Code::kInvalidArgument, "engineOpen: caller.groups must be an array of gids");
      Napi::Array a = gs.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        uint64_t g = 0;
        if (!ToU64(a.Get(i), &g) || g > 0xfffffffeu)
          return Throw(env, Code::kInvalidArgument, "engineOpen: caller.groups must be gids 0..4294967294");
        cred.groups.push_back(static_cast<gid_t>(g));
      }
    }
  }
  auto res = std::make_shared<engine::OpenResult>();
  return OnPool(
      info,
      [eng, name, has_create, create, cred, res]() {
        return eng->Open(name, has_create ? &create : nullptr, cred, res.get());
      },
      [res](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("datasetId", Napi::Number::New(e, static_cast<double>(res->dataset_id)));
        o.Set("sizeBytes", Napi::Number::New(e, static_cast<double>(res->size_bytes)));
        o.Set("mode", Napi::String::New(e, ModeName(res->mode)));
        o.Set("replicas", Napi::Number::New(e, res->replicas));
        o.Set("chunkSizeBytes", Napi::Number::New(e, res->chunk_size_bytes));
        return o;
      });
}

// engineOpenSession(h, datasetId) -> session id (number). The sync point is now.
Napi::Value EngineOpenSession(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineOpenSession");
  Napi::Env env = info.Env();
  uint64_t ds = 0;
  if (info.Length() < 2 || !ToU64(info[1], &ds)) return Throw(env, Code::kInvalidArgument, "engineOpenSession: bad datasetId");
  engine::PeerCred cred;
  cred.uid = ::geteuid();
  cred.gid = ::getegid();
  return Napi::Number::New(env, static_cast<double>(eng->OpenSession(ds, cred)));
}

bool SessionArg(const Napi::CallbackInfo& info, uint64_t* session) {
  return info.Length() >= 2 && ToU64(info[1], session) && *session != 0;
}

Napi::Value EngineCloseSession(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineCloseSession");
  uint64_t s = 0;
  if (!SessionArg(info, &s)) return Throw(info.Env(), Code::kInvalidArgument, "engineCloseSession: bad session id");
  eng->CloseSession(s);
  return info.Env().Undefined();
}

Napi::Value EngineResyncSession(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineResyncSession");
  uint64_t s = 0;
  if (!SessionArg(info, &s)) return Throw(info.Env(), Code::kInvalidArgument, "engineResyncSession: bad session id");
  eng->ResyncSession(s);
  return info.Env().Undefined();
}

// engineEnsurePages(h, datasetId, firstPage, count) -> Promise<void>: pages present in the node cache.
Napi::Value EngineEnsurePages(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineEnsurePages");
  Napi::Env env = info.Env();
  uint64_t ds = 0, first = 0, count = 0;
  if (info.Length() < 4 || !ToU64(info[1], &ds) || !ToU64(info[2], &first) || !ToU64(info[3], &count) || count == 0 ||
      count > kMaxEnsurePages)
    return Throw(env, Code::kInvalidArgument, "engineEnsurePages(handle, datasetId, firstPage, count 1..2^20)");
  return OnPool(info, [eng, ds, first, count]() { return eng->EnsurePages(ds, first, static_cast<uint32_t>(count)); });
}

// engineRefreshPages(h, datasetId, firstPage, count) -> Promise<void>: cached copies in the range checked with
// their owners, newer ones installed (MRSW acquire). UNAVAILABLE when an owner is down or does not answer.
Napi::Value EngineRefreshPages(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineRefreshPages");
  Napi::Env env = info.Env();
  uint64_t ds = 0, first = 0, count = 0;
  if (info.Length() < 4 || !ToU64(info[1], &ds) || !ToU64(info[2], &first) || !ToU64(info[3], &count) || count == 0)
    return Throw(env, Code::kInvalidArgument, "engineRefreshPages(handle, datasetId, firstPage, count >= 1)");
  return OnPool(info, [eng, ds, first, count]() { return eng->RefreshPages(ds, first, count); });
}

// engineHandOffChunk(h, datasetId, chunk, target, timeoutMs) -> Promise<{pagesSent}>: the owner side of a planned
// handoff (engine HandOffChunk): the chunk is refused from now on, its commits drain, its written pages are copied to
// `target`. Then the caller moves the chunk at the dispatcher (or calls engineAbandonHandOff).
Napi::Value EngineHandOffChunk(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineHandOffChunk");
  Napi::Env env = info.Env();
  uint64_t ds = 0, chunk = 0, target = 0, timeout_ms = 0;
  if (info.Length() < 5 || !ToU64(info[1], &ds) || !ToU64(info[2], &chunk) || chunk > UINT32_MAX ||
      !ToU64(info[3], &target) || target == 0 || target > UINT32_MAX || !ToU64(info[4], &timeout_ms) ||
      timeout_ms == 0 || timeout_ms > 3600 * 1000)
    return Throw(env, Code::kInvalidArgument,
                 "engineHandOffChunk(handle, datasetId, chunk, target >= 1, timeoutMs 1..3600000)");
  auto sent = std::make_shared<uint64_t>(0);
  return OnPool(
      info,
      [eng, ds, chunk, target, timeout_ms, sent]() {
        return eng->HandOffChunk(ds, static_cast<uint32_t>(chunk), static_cast<uint32_t>(target),
                                 std::chrono::milliseconds(timeout_ms), sent.get());
      },
      [sent](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("pagesSent", Napi::Number::New(e, static_cast<double>(*sent)));
        return o;
      });
}

// engineAbandonHandOff(h, datasetId, chunk): the dispatcher still names this node the chunk's owner after a handoff
// that could not be completed: the chunk is served here again.
Napi::Value EngineAbandonHandOff(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineAbandonHandOff");
  Napi::Env env = info.Env();
  uint64_t ds = 0, chunk = 0;
  if (info.Length() < 3 || !ToU64(info[1], &ds) || !ToU64(info[2], &chunk) || chunk > UINT32_MAX)
    return Throw(env, Code::kInvalidArgument, "engineAbandonHandOff(handle, datasetId, chunk)");
  eng->AbandonHandOff(ds, static_cast<uint32_t>(chunk));
  return env.Undefined();
}

// engineBaseImage(h, session, firstPage, count = 1) -> Buffer of count * 4096 bytes: the pages as of the
// session's sync point (the base its private copies are diffed against). Local: the pages must be present.
Napi::Value EngineBaseImage(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineBaseImage");
  Napi::Env env = info.Env();
  uint64_t s = 0, first = 0, count = 1;
  if (!SessionArg(info, &s) || info.Length() < 3 || !ToU64(info[2], &first) ||
      (info.Length() > 3 && !info[3].IsUndefined() && (!ToU64(info[3], &count) || count == 0 || count > kMaxBasePages)))
    return Throw(env, Code::kInvalidArgument, "engineBaseImage(handle, session, firstPage, count 1..4096)");
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, static_cast<size_t>(count * kPageSize));
  for (uint64_t i = 0; i < count; i++) {
    Status st = eng->BaseImage(s, first + i, out.Data() + i * kPageSize);
    if (!st.ok()) return Throw(env, st);
  }
  return out;
}

// engineReadCommitted(h, session, firstPage, count 1..4096) -> Promise<Buffer of count * 4096 bytes>: the latest
// committed content this node shows of the session's dataset, as one consistent state (every commit whole; engine
// ReadCommitted). Not the session's base images. Runs on the pool: it may fetch pages and wait up to about 2 s for
// an open multi-owner commit to close (UNAVAILABLE then).
Napi::Value EngineReadCommitted(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineReadCommitted");
  Napi::Env env = info.Env();
  uint64_t s = 0, first = 0, count = 0;
  if (!SessionArg(info, &s) || info.Length() < 4 || !ToU64(info[2], &first) || !ToU64(info[3], &count) ||
      count == 0 || count > kMaxBasePages)
    return Throw(env, Code::kInvalidArgument, "engineReadCommitted(handle, session, firstPage, count 1..4096)");
  // Filled on the pool thread, handed to JS only after Execute returned (no JS object touched off-thread).
  auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(count * kPageSize));
  return OnPool(
      info,
      [eng, s, first, count, buf]() {
        return eng->ReadCommitted(s, first, static_cast<uint32_t>(count), buf->data());
      },
      [buf](Napi::Env e) -> Napi::Value { return Napi::Buffer<uint8_t>::Copy(e, buf->data(), buf->size()); });
}

// engineCommitSession(h, session, [{page, data: Buffer(4096)}], replicas, reads = [], lease = null) ->
// Promise<{copies, pages, ranges, bytes}>. `reads` ([{offset, len}]) asks for read validation (engine
// CommitWith): ABORTED if a page holding those bytes changed since the session's sync point. `lease` is the MRSW
// lease certificate (a Buffer from the dispatcher), passed to CommitWith as the shim server passes an app's:
// owners verify it. ABORTED rejects with .details = {conflicts: [{offset, len}]}; nothing was applied then.
Napi::Value EngineCommitSession(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(eng, "engineCommitSession");
  Napi::Env env = info.Env();
  uint64_t s = 0, replicas = 0;
  if (!SessionArg(info, &s) || info.Length() < 4 || !info[2].IsArray() || !ToU64(info[3], &replicas) ||
      replicas > kMaxReplicas)
    return Throw(env, Code::kInvalidArgument, "engineCommitSession(handle, session, pages[], replicas 0..64)");
  Napi::Array arr = info[2].As<Napi::Array>();
  auto pages = std::make_shared<std::vector<engine::DirtyPage>>();
  pages->reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) return Throw(env, Code::kInvalidArgument, "engineCommitSession: page " + std::to_string(i) + " is not an object");
    Napi::Object o = v.As<Napi::Object>();
    engine::DirtyPage dp;
    Napi::Value data = o.Get("data");
    if (!ToU64(o.Get("page"), &dp.page) || !data.IsBuffer() || data.As<Napi::Buffer<uint8_t>>().Length() != kPageSize)
      return Throw(env, Code::kInvalidArgument,
                   "engineCommitSession: page " + std::to_string(i) + " needs {page: integer, data: Buffer(4096)}");
    Napi::Buffer<uint8_t> b = data.As<Napi::Buffer<uint8_t>>();
    dp.data.assign(b.Data(), b.Data() + kPageSize);
    pages->push_back(std::move(dp));
  }
  auto extras = std::make_shared<engine::CommitExtras>();
  if (info.Length() > 4 && !info[4].IsUndefined() && !info[4].IsNull()) {
    if (!info[4].IsArray()) return Throw(env, Code::kInvalidArgument, "engineCommitSession: reads must be an array");
    Napi::Array ra = info[4].As<Napi::Array>();
    for (uint32_t i = 0; i < ra.Length(); i++) {
      Napi::Value v = ra.Get(i);
      engine::ReadRange r;
      if (!v.IsObject() || !ToU64(v.As<Napi::Object>().Get("offset"), &r.offset) ||
          !ToU64(v.As<Napi::Object>().Get("len"), &r.len) || r.len == 0)
        return Throw(env, Code::kInvalidArgument,
                     "engineCommitSession: read " + std::to_string(i) + " needs {offset, len > 0} integers");
      extras->reads.push_back(r);
    }
  }
  if (info.Length() > 5 && !info[5].IsUndefined() && !info[5].IsNull()) {
    if (!info[5].IsBuffer())
      return Throw(env, Code::kInvalidArgument, "engineCommitSession: lease must be a Buffer or null");
    Napi::Buffer<uint8_t> lb = info[5].As<Napi::Buffer<uint8_t>>();
    if (lb.Length() == 0 || lb.Length() > kMaxLeaseBytes)
      return Throw(env, Code::kInvalidArgument, "engineCommitSession: lease certificate must be 1..65536 bytes");
    extras->lease.assign(lb.Data(), lb.Data() + lb.Length());
  }
  auto res = std::make_shared<engine::CommitResult>();
  return OnPool(
      info,
      [eng, s, pages, replicas, extras, res]() {
        return eng->CommitWith(s, *pages, static_cast<uint32_t>(replicas), *extras, res.get());
      },
      [res](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("copies", Napi::Number::New(e, res->copies));
        o.Set("replicas", Napi::Number::New(e, res->replicas));
        o.Set("underReplicated", Napi::Boolean::New(e, res->under_replicated));
        o.Set("pages", Napi::Number::New(e, static_cast<double>(res->pages)));
        o.Set("ranges", Napi::Number::New(e, static_cast<double>(res->ranges)));
        o.Set("bytes", Napi::Number::New(e, static_cast<double>(res->bytes)));
        return o;
      },
      [res](Napi::Env e, Napi::Error& err) {
        Napi::Object details = Napi::Object::New(e);
        Napi::Array cs = Napi::Array::New(e, res->conflicts.size());
        for (size_t i = 0; i < res->conflicts.size(); i++) {
          Napi::Object c = Napi::Object::New(e);
          c.Set("offset", Napi::Number::New(e, static_cast<double>(res->conflicts[i].offset)));
          c.Set("len", Napi::Number::New(e, res->conflicts[i].len));
          cs.Set(static_cast<uint32_t>(i), c);
        }
        details.Set("conflicts", cs);
        err.Set("details", details);
      });
}

// socketPeerCredentials(fd) -> {pid, uid, gid, groups} of the process at the other end of a connected unix socket
// (SO_PEERCRED and SO_PEERGROUPS, fixed when it connected), for the gRPC unix socket's callers.
Napi::Value SocketPeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t fd = 0;
  if (info.Length() < 1 || !ToU64(info[0], &fd) || fd > 0x7fffffff)
    return Throw(env, Code::kInvalidArgument, "socketPeerCredentials: fd must be a non-negative integer");
  SocketPeer peer;
  Status st = ReadSocketPeer(static_cast<int>(fd), &peer);
  if (!st.ok()) return Throw(env, st.code(), "socketPeerCredentials: " + st.message());
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, peer.pid));
  o.Set("uid", Napi::Number::New(env, peer.uid));
  o.Set("gid", Napi::Number::New(env, peer.gid));
  Napi::Array groups = Napi::Array::New(env, peer.groups.size());
  for (size_t i = 0; i < peer.groups.size(); i++) groups.Set(static_cast<uint32_t>(i), Napi::Number::New(env, peer.groups[i]));
  o.Set("groups", groups);
  return o;
}

}  // namespace

void InitDataBinding(Napi::Env env, Napi::Object exports) {
  exports.Set("engineOpen", Napi::Function::New(env, EngineOpen, "engineOpen"));
  exports.Set("socketPeerCredentials", Napi::Function::New(env, SocketPeerCredentials, "socketPeerCredentials"));
  exports.Set("engineOpenSession", Napi::Function::New(env, EngineOpenSession, "engineOpenSession"));
  exports.Set("engineCloseSession", Napi::Function::New(env, EngineCloseSession, "engineCloseSession"));
  exports.Set("engineResyncSession", Napi::Function::New(env, EngineResyncSession, "engineResyncSession"));
  exports.Set("engineEnsurePages", Napi::Function::New(env, EngineEnsurePages, "engineEnsurePages"));
  exports.Set("engineRefreshPages", Napi::Function::New(env, EngineRefreshPages, "engineRefreshPages"));
  exports.Set("engineHandOffChunk", Napi::Function::New(env, EngineHandOffChunk, "engineHandOffChunk"));
  exports.Set("engineAbandonHandOff", Napi::Function::New(env, EngineAbandonHandOff, "engineAbandonHandOff"));
  exports.Set("engineBaseImage", Napi::Function::New(env, EngineBaseImage, "engineBaseImage"));
  exports.Set("engineCommitSession", Napi::Function::New(env, EngineCommitSession, "engineCommitSession"));
  exports.Set("engineReadCommitted", Napi::Function::New(env, EngineReadCommitted, "engineReadCommitted"));
}

}  // namespace addon
}  // namespace hotpot
