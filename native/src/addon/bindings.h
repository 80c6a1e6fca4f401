#pragma once

#include <napi.h>

#include "common/status.h"

namespace hotpot {
namespace addon {

// engine_binding.cc: createEngine and friends (node daemon).
void InitEngineBinding(Napi::Env env, Napi::Object exports);
// shim_binding.cc: shimConnect and friends (SDK), over the C ABI in include/hotpot.h.
void InitShimBinding(Napi::Env env, Napi::Object exports);

// A JS Error with .code = gRPC status name (and optional .details), for rejecting/throwing.
inline Napi::Error MakeError(Napi::Env env, const Status& st) {
  Napi::Error e = Napi::Error::New(env, st.message());
  e.Set("code", Napi::String::New(env, CodeName(st.code())));
  return e;
}

}  // namespace addon
}  // namespace hotpot
