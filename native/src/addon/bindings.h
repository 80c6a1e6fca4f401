#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"
#include "engine/types.h"

namespace hotpot {
namespace engine {
class Engine;
}  // namespace engine
namespace addon {

// engine_binding.cc: createEngine and friends (node daemon).
void InitEngineBinding(Napi::Env env, Napi::Object exports);
// shim_binding.cc: shimConnect and friends (SDK), over the C ABI in include/hotpot.h.
void InitShimBinding(Napi::Env env, Napi::Object exports);
// data_binding.cc: engine sessions for the gRPC Data service (engineOpen, engineCommitSession, ...).
void InitDataBinding(Napi::Env env, Napi::Object exports);
// observe_binding.cc: engine events, debug mask, span records, latency histograms, operator views.
void InitObserveBinding(Napi::Env env, Napi::Object exports);
// engine_binding.cc: the engine behind a createEngine handle, or nullptr if `v` is not a live one.
engine::Engine* EngineFromValue(const Napi::Value& v);

// ---- Errors (bindings.cc). Nothing is thrown as a C++ exception: the addon is built without them.

// A JS Error with .code = gRPC status name (and optional .details), for rejecting/throwing.
inline Napi::Error MakeError(Napi::Env env, const Status& st) {
  Napi::Error e = Napi::Error::New(env, st.message());
  e.Set("code", Napi::String::New(env, CodeName(st.code())));
  return e;
}

// Throw*: sets MakeError(...) as the pending JS exception and returns undefined, for `return Throw(...)`.
Napi::Value Throw(Napi::Env env, const Status& st);
Napi::Value Throw(Napi::Env env, Code code, const std::string& msg);
Napi::Value ThrowInvalid(Napi::Env env, const std::string& msg);

// ---- Integers from JS numbers (doubles: exact only up to 2^53 - 1).

constexpr uint64_t kMaxSafeInteger = (uint64_t(1) << 53) - 1;

// A number holding an integer in [0, max] (max <= kMaxSafeInteger); false for anything else.
bool ToUint(const Napi::Value& v, uint64_t max, uint64_t* out);
// A number holding an integer in [0, 2^53 - 1].
inline bool ToU64(const Napi::Value& v, uint64_t* out) { return ToUint(v, kMaxSafeInteger, out); }
// As ToU64, or a BigInt that fits in 64 bits.
bool ToU64OrBigInt(const Napi::Value& v, uint64_t* out);

// Option-object readers: false (with *err = "<key> ...") when present but of the wrong type or range, or absent
// and required; an absent optional key leaves *out as it was.
bool GetString(const Napi::Object& o, const char* key, std::string* out, std::string* err, bool required = false);
bool GetUint(const Napi::Object& o, const char* key, uint64_t max, uint64_t* out, std::string* err,
             bool required = false);

// Dataset modes as the engine bindings spell them: "mrmw" | "mrsw".
const char* ModeName(engine::Mode m);
bool ParseMode(const std::string& s, engine::Mode* m);

// ---- Engine handles

// The engine behind argument 0, or nullptr with INVALID_ARGUMENT thrown:
// "<fn>: first argument must be an engine handle" ("first argument must be an engine handle" when fn is null).
engine::Engine* EngineArg(const Napi::CallbackInfo& info, const char* fn);

// In a binding function (with `info` in scope): declares `engine::Engine* eng`, or returns having thrown.
#define ENGINE_OR_THROW(eng, fn)                                           \
  ::hotpot::engine::Engine* eng = ::hotpot::addon::EngineArg(info, (fn)); \
  if (eng == nullptr) return info.Env().Undefined()

// ---- Promises settled from the libuv pool

// Runs `exec` on a libuv pool thread (it must not touch JS values), then settles a Promise on the JS thread:
// resolved with ok(env) (undefined without `ok`) when exec returned OK, else rejected with MakeError(status)
// after `fail` (if any) decorated it (e.g. with .details). Allocate with new; Start() queues it and returns the
// Promise, and the worker deletes itself once settled.
class Work : public Napi::AsyncWorker {
 public:
  using Exec = std::function<Status()>;
  using Ok = std::function<Napi::Value(Napi::Env)>;
  using Fail = std::function<void(Napi::Env, Napi::Error&)>;

  // `resource`: the async resource name async_hooks see ("hotpot.data", "hotpot.shim").
  Work(Napi::Env env, const char* resource, Exec exec, Ok ok = nullptr, Fail fail = nullptr);

  // Holds a reference to `v` until the work is gone (an engine handle: its finalizer shuts the engine down, which
  // must not happen while exec runs).
  Work* Keep(const Napi::Value& v);
  // Runs on the JS thread when the work is done, just before the Promise settles; dropped (with whatever it
  // captured) just after.
  Work* OnSettle(std::function<void()> fn);
  Napi::Promise Start();

 protected:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Value> keep_;
  Exec exec_;
  Ok ok_;
  Fail fail_;
  std::function<void()> on_settle_;
  Status st_;
};

}  // namespace addon
}  // namespace hotpot
