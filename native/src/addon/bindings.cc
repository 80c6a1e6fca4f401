// Helpers shared by the binding files (bindings.h).
#include "addon/bindings.h"

#include <utility>

namespace hotpot {
namespace addon {

Napi::Value Throw(Napi::Env env, const Status& st) {
  MakeError(env, st).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value Throw(Napi::Env env, Code code, const std::string& msg) { return Throw(env, Status(code, msg)); }

Napi::Value ThrowInvalid(Napi::Env env, const std::string& msg) { return Throw(env, Code::kInvalidArgument, msg); }

namespace {

// `d` is an integer in [0, max]. The range is checked before the cast (casting a larger double is undefined).
bool IsUint(double d, uint64_t max) { return d >= 0 && d <= double(max) && d == double(uint64_t(d)); }

}  // namespace

bool ToUint(const Napi::Value& v, uint64_t max, uint64_t* out) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!IsUint(d, max)) return false;
  *out = uint64_t(d);
  return true;
}

bool ToU64OrBigInt(const Napi::Value& v, uint64_t* out) {
  if (v.IsBigInt()) {
    bool lossless = false;
    *out = v.As<Napi::BigInt>().Uint64Value(&lossless);
    return lossless;
  }
  return ToU64(v, out);
}

namespace {

// Reads o[key] into *v; false if it is absent (undefined or null), with *err set when it is required.
bool Present(const Napi::Object& o, const char* key, bool required, std::string* err, Napi::Value* v) {
  *v = o.Get(key);
  if (!v->IsUndefined() && !v->IsNull()) return true;
  if (required) *err = std::string(key) + " is required";
  return false;
}

}  // namespace

bool GetString(const Napi::Object& o, const char* key, std::string* out, std::string* err, bool required) {
  Napi::Value v;
  if (!Present(o, key, required, err, &v)) return !required;
  if (!v.IsString()) {
    *err = std::string(key) + " must be a string";
    return false;
  }
  *out = v.As<Napi::String>().Utf8Value();
  return true;
}

bool GetUint(const Napi::Object& o, const char* key, uint64_t max, uint64_t* out, std::string* err, bool required) {
  Napi::Value v;
  if (!Present(o, key, required, err, &v)) return !required;
  if (!v.IsNumber()) {
    *err = std::string(key) + " must be a number";
    return false;
  }
  if (!ToUint(v, max, out)) {
    *err = std::string(key) + " must be an integer in 0.." + std::to_string(max);
    return false;
  }
  return true;
}

const char* ModeName(engine::Mode m) { return m == engine::Mode::kMrsw ? "mrsw" : "mrmw"; }

bool ParseMode(const std::string& s, engine::Mode* m) {
  if (s == "mrmw") *m = engine::Mode::kMrmw;
  else if (s == "mrsw") *m = engine::Mode::kMrsw;
  else return false;
  return true;
}

engine::Engine* EngineArg(const Napi::CallbackInfo& info, const char* fn) {
  engine::Engine* e = info.Length() > 0 ? EngineFromValue(info[0]) : nullptr;
  if (e == nullptr) {
    const std::string what = "first argument must be an engine handle";
    ThrowInvalid(info.Env(), fn == nullptr ? what : std::string(fn) + ": " + what);
  }
  return e;
}

Work::Work(Napi::Env env, const char* resource, Exec exec, Ok ok, Fail fail)
    : Napi::AsyncWorker(env, resource),
      deferred_(Napi::Promise::Deferred::New(env)),
      exec_(std::move(exec)),
      ok_(std::move(ok)),
      fail_(std::move(fail)) {}

Work* Work::Keep(const Napi::Value& v) {
  keep_ = Napi::Persistent(v);
  return this;
}

Work* Work::OnSettle(std::function<void()> fn) {
  on_settle_ = std::move(fn);
  return this;
}

Napi::Promise Work::Start() {
  Napi::Promise p = deferred_.Promise();
  Queue();
  return p;
}

void Work::Execute() { st_ = exec_(); }

void Work::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (on_settle_) on_settle_();
  if (!st_.ok()) {
    Napi::Error e = MakeError(env, st_);
    if (fail_) fail_(env, e);
    deferred_.Reject(e.Value());
  } else {
    deferred_.Resolve(ok_ ? ok_(env) : env.Undefined());
  }
  on_settle_ = nullptr;
}

void Work::OnError(const Napi::Error& e) {
  if (on_settle_) on_settle_();
  deferred_.Reject(e.Value());
  on_settle_ = nullptr;
}

}  // namespace addon
}  // namespace hotpot
