#pragma once

#include <napi.h>

#include "common/status.h"

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

// A JS Error with .code = gRPC status name (and optional .details), for rejecting/throwing.
inline Napi::Error MakeError(Napi::Env env, const Status& st) {
  Napi::Error e = Napi::Error::New(env, st.message());
  e.Set("code", Napi::String::New(env, CodeName(st.code())));
  return e;
}

}  // namespace addon
}  // namespace hotpot
