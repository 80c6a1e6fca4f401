// N-API binding of the engine's observability (engine/observe.h) for the node daemon. JS names:
// engineDrainEvents, engineSetDebugMask, engineSetTracing, engineDrainSpans, engineHistograms, engineInspect.
// All are cheap snapshots taken on the JS thread; nothing here blocks on the data path beyond a short lock.
#include <cstring>
#include <string>
#include <vector>

#include "addon/bindings.h"
#include "engine/engine.h"
#include "engine/observe.h"
#include "wire/traceparent.h"

namespace hotpot {
namespace addon {
namespace {

namespace obs = hotpot::observe;

// Integer argument i in [0, max]; false if absent, not a number, fractional or out of range.
bool UintArg(const Napi::CallbackInfo& info, size_t i, uint64_t max, uint64_t* out) {
  return info.Length() > i && ToUint(info[i], max, out);
}

Napi::Value EngineDrainEvents(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(e, "engineDrainEvents");
  Napi::Env env = info.Env();
  uint64_t after = 0, max = 0;
  if (!UintArg(info, 1, kMaxSafeInteger, &after) || !UintArg(info, 2, 65536, &max))
    return ThrowInvalid(env, "engineDrainEvents(handle, afterSeq >= 0, max in 0..65536)");
  uint64_t next = 0;
  std::vector<obs::Event> evs = e->observer()->events().Read(after, size_t(max), &next);
  Napi::Array arr = Napi::Array::New(env, evs.size());
  for (size_t i = 0; i < evs.size(); i++) {
    const obs::Event& ev = evs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("seq", Napi::Number::New(env, double(ev.seq)));
    o.Set("unixNs", Napi::String::New(env, std::to_string(ev.unix_ns)));
    o.Set("kind", Napi::String::New(env, obs::EventKindName(ev.kind)));
    o.Set("node", Napi::Number::New(env, ev.node));
    o.Set("datasetId", Napi::Number::New(env, double(ev.dataset)));
    o.Set("page", Napi::Number::New(env, double(ev.page)));
    o.Set("count", Napi::Number::New(env, double(ev.count)));
    o.Set("latencyUs", Napi::Number::New(env, double(ev.latency_ns) / 1000.0));
    o.Set("txid", Napi::Number::New(env, double(ev.txid)));
    o.Set("status", Napi::String::New(env, CodeName(ev.status)));
    o.Set("detail", Napi::String::New(env, std::string(ev.detail, strnlen(ev.detail, sizeof ev.detail))));
    arr.Set(uint32_t(i), o);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("events", arr);
  out.Set("nextSeq", Napi::Number::New(env, double(next)));
  out.Set("mask", Napi::Number::New(env, e->observer()->events().mask()));
  return out;
}

Napi::Value EngineSetDebugMask(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(e, "engineSetDebugMask");
  Napi::Env env = info.Env();
  uint64_t mask = 0;
  if (!UintArg(info, 1, obs::kMaskAll, &mask))
    return ThrowInvalid(env, "engineSetDebugMask(handle, mask): mask must be an integer in 0.." +
                                 std::to_string(obs::kMaskAll));
  uint32_t prev = e->observer()->events().mask();
  e->observer()->events().set_mask(uint32_t(mask));
  return Napi::Number::New(env, prev);
}

Napi::Value EngineSetTracing(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(e, "engineSetTracing");
  Napi::Env env = info.Env();
  uint64_t sample = 0;
  if (info.Length() < 2 || !info[1].IsBoolean() || !UintArg(info, 2, 0xffffffffu, &sample))
    return ThrowInvalid(env, "engineSetTracing(handle, enabled: boolean, faultSampleOneIn: 0..2^32-1)");
  e->observer()->set_tracing(info[1].As<Napi::Boolean>().Value());
  e->observer()->set_fault_sample(uint32_t(sample));
  return env.Undefined();
}

Napi::Value EngineDrainSpans(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(e, "engineDrainSpans");
  Napi::Env env = info.Env();
  uint64_t max = 0;
  if (!UintArg(info, 1, 65536, &max)) return ThrowInvalid(env, "engineDrainSpans(handle, max in 0..65536)");
  std::vector<obs::SpanRecord> spans = e->observer()->DrainSpans(size_t(max));
  Napi::Array arr = Napi::Array::New(env, spans.size());
  static const uint8_t kZero[8] = {};
  for (size_t i = 0; i < spans.size(); i++) {
    const obs::SpanRecord& r = spans[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, r.name));
    o.Set("traceId", Napi::String::New(env, wire::HexOf(r.trace_id, 16)));
    o.Set("spanId", Napi::String::New(env, wire::HexOf(r.span_id, 8)));
    bool root = std::memcmp(r.parent_span_id, kZero, 8) == 0;
    o.Set("parentSpanId", root ? env.Null() : Napi::String::New(env, wire::HexOf(r.parent_span_id, 8)));
    o.Set("startUnixNs", Napi::String::New(env, std::to_string(r.start_unix_ns)));
    o.Set("endUnixNs", Napi::String::New(env, std::to_string(r.end_unix_ns)));
    o.Set("status", Napi::String::New(env, CodeName(r.status)));
    Napi::Object attrs = Napi::Object::New(env);
    for (const auto& kv : r.int_attrs) attrs.Set(kv.first, Napi::Number::New(env, double(kv.second)));
    for (const auto& kv : r.str_attrs) attrs.Set(kv.first, Napi::String::New(env, kv.second));
    o.Set("attributes", attrs);
    arr.Set(uint32_t(i), o);
  }
  return arr;
}

Napi::Object HistogramObject(Napi::Env env, const obs::Histogram& h) {
  obs::Histogram::Snapshot s = h.Get();
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", Napi::Number::New(env, double(s.count)));
  o.Set("sumUs", Napi::Number::New(env, double(s.sum_ns) / 1000.0));
  // Cumulative-free bucket counts; bounds[i] is bucket i's upper bound in us (the last bucket is unbounded).
  Napi::Array bounds = Napi::Array::New(env, obs::Histogram::kBuckets - 1);
  Napi::Array counts = Napi::Array::New(env, obs::Histogram::kBuckets);
  for (size_t i = 0; i < obs::Histogram::kBuckets; i++) {
    if (i + 1 < obs::Histogram::kBuckets)
      bounds.Set(uint32_t(i), Napi::Number::New(env, double(obs::Histogram::UpperBoundUs(i))));
    counts.Set(uint32_t(i), Napi::Number::New(env, double(s.buckets[i])));
  }
  o.Set("boundsUs", bounds);
  o.Set("counts", counts);
  return o;
}

Napi::Value EngineHistograms(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(e, "engineHistograms");
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("fault", HistogramObject(env, e->observer()->fault_latency()));
  o.Set("fetch", HistogramObject(env, e->observer()->fetch_latency()));
  o.Set("commit", HistogramObject(env, e->observer()->commit_latency()));
  o.Set("spansDropped", Napi::Number::New(env, double(e->observer()->spans_dropped())));
  return o;
}

Napi::Value EngineInspect(const Napi::CallbackInfo& info) {
  ENGINE_OR_THROW(e, "engineInspect");
  Napi::Env env = info.Env();
  engine::InspectView v = e->Inspect();
  auto num = [&](double x) { return Napi::Number::New(env, x); };
  Napi::Array redo = Napi::Array::New(env, v.redo.size());
  for (size_t i = 0; i < v.redo.size(); i++) {
    const engine::RedoView& r = v.redo[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("slot", num(r.slot));
    o.Set("txid", num(double(r.txid)));
    o.Set("datasetId", num(double(r.dataset_id)));
    o.Set("committer", num(r.committer));
    o.Set("phase", Napi::String::New(env, r.phase));
    o.Set("ranges", num(double(r.ranges)));
    o.Set("bytes", num(double(r.bytes)));
    redo.Set(uint32_t(i), o);
  }
  Napi::Array sessions = Napi::Array::New(env, v.sessions.size());
  for (size_t i = 0; i < v.sessions.size(); i++) {
    const engine::SessionView& s = v.sessions[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("sessionId", num(double(s.session_id)));
    o.Set("datasetId", num(double(s.dataset_id)));
    o.Set("datasetName", Napi::String::New(env, s.dataset_name));
    o.Set("pid", num(s.cred.pid));
    o.Set("uid", num(s.cred.uid));
    sessions.Set(uint32_t(i), o);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("redo", redo);
  o.Set("sessions", sessions);
  return o;
}

}  // namespace

void InitObserveBinding(Napi::Env env, Napi::Object exports) {
  exports.Set("engineDrainEvents", Napi::Function::New(env, EngineDrainEvents, "engineDrainEvents"));
  exports.Set("engineSetDebugMask", Napi::Function::New(env, EngineSetDebugMask, "engineSetDebugMask"));
  exports.Set("engineSetTracing", Napi::Function::New(env, EngineSetTracing, "engineSetTracing"));
  exports.Set("engineDrainSpans", Napi::Function::New(env, EngineDrainSpans, "engineDrainSpans"));
  exports.Set("engineHistograms", Napi::Function::New(env, EngineHistograms, "engineHistograms"));
  exports.Set("engineInspect", Napi::Function::New(env, EngineInspect, "engineInspect"));
}

}  // namespace addon
}  // namespace hotpot
