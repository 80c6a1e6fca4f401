// N-API entry point. Every function exported here is declared once in native/index.ts.
// No C++ exception crosses this boundary: the addon is built with NAPI_DISABLE_CPP_EXCEPTIONS and
// reports failures as JS errors with a string `code` (gRPC status name).
#include <napi.h>

#include "addon/bindings.h"
#include "common/page.h"
#include "version.h"

namespace {

Napi::Value EngineInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("version", Napi::String::New(env, hotpot::engineVersion()));
  out.Set("build", Napi::String::New(env, hotpot::engineBuildInfo()));
  out.Set("protocolVersion", Napi::Number::New(env, hotpot::kEngineProtocolVersion));
  out.Set("pageSize", Napi::Number::New(env, double(hotpot::kPageSize)));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("engineInfo", Napi::Function::New(env, EngineInfo, "engineInfo"));
  hotpot::addon::InitEngineBinding(env, exports);
  hotpot::addon::InitShimBinding(env, exports);
  hotpot::addon::InitObserveBinding(env, exports);
  hotpot::addon::InitDataBinding(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(hotpot_native, Init)
