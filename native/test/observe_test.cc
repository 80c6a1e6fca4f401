// The engine's observability pieces: event ring (mask, wrap-around, cursors), log2 histograms, span records and
// the traceparent codec.
#include <cstring>
#include <string>
#include <vector>
#include <thread>

#include "engine/core.h"
#include "engine/observe.h"
#include "test_util.h"
#include "wire/traceparent.h"

using namespace hotpot;
using namespace hotpot::observe;

namespace {
Event Ev(EventKind k, uint64_t page) {
  Event e;
  e.kind = k;
  e.page = page;
  return e;
}
}  // namespace

TEST(MaskFiltersEventsByKind) {
  Observer o;
  o.events().set_mask(kMaskCommits);
  o.Emit(Ev(EventKind::kFaultRemote, 1));
  o.Emit(Ev(EventKind::kCommitStart, 2));
  o.Emit(Ev(EventKind::kMembership, 3));
  uint64_t next = 0;
  auto v = o.events().Read(0, 100, &next);
  CHECK(v.size() == 1);
  CHECK(v[0].kind == EventKind::kCommitStart && v[0].page == 2 && v[0].seq == 1);
  CHECK(v[0].unix_ns > 0);
  CHECK(next == 1);
  o.events().set_mask(kMaskAll);
  o.Emit(Ev(EventKind::kFaultLocal, 4));
  v = o.events().Read(next, 100, &next);
  CHECK(v.size() == 1 && v[0].page == 4 && next == 2);
  v = o.events().Read(next, 100, &next);
  CHECK(v.empty() && next == 2);
  o.events().set_mask(0xffffffffu);
  CHECK(o.events().mask() == kMaskAll);
}

TEST(RingKeepsTheNewestAndReportsGapsThroughSeq) {
  EventRing r;
  r.set_mask(kMaskAll);
  const uint64_t total = EventRing::kCapacity + 100;
  for (uint64_t i = 1; i <= total; i++) r.Record(Ev(EventKind::kCommitEnd, i));
  uint64_t next = 0;
  auto v = r.Read(0, 10, &next);
  CHECK(v.size() == 10);
  CHECK(v[0].seq == 101 && v[0].page == 101);  // the 100 oldest were overwritten
  CHECK(next == 110);
  v = r.Read(next, 1u << 20, &next);
  CHECK(v.size() == EventRing::kCapacity - 10);
  CHECK(v.back().seq == total && next == total);
}

TEST(RingIsSafeUnderConcurrentWriters) {
  EventRing r;
  r.set_mask(kMaskAll);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&] {
      for (int i = 0; i < 1500; i++) r.Record(Ev(EventKind::kFaultLocal, uint64_t(i)));
    });
  for (auto& t : ts) t.join();
  CHECK(r.last_seq() == 6000);
  uint64_t next = 0;
  auto v = r.Read(0, 1u << 20, &next);
  CHECK(v.size() == EventRing::kCapacity);
  for (size_t i = 1; i < v.size(); i++) CHECK(v[i].seq == v[i - 1].seq + 1);
}

TEST(HistogramBucketsAreLog2Microseconds) {
  CHECK(Histogram::BucketOf(0) == 0);
  CHECK(Histogram::BucketOf(999) == 0);
  CHECK(Histogram::BucketOf(1000) == 1);     // 1 us in [1, 2)
  CHECK(Histogram::BucketOf(3000) == 2);     // 3 us in [2, 4)
  CHECK(Histogram::BucketOf(100000) == 7);   // 100 us in [64, 128)
  CHECK(Histogram::BucketOf(~0ull) == Histogram::kBuckets - 1);
  CHECK(Histogram::UpperBoundUs(7) == 128);
  Histogram h;
  h.Add(500);
  h.Add(100000);
  h.Add(100000);
  auto s = h.Get();
  CHECK(s.count == 3 && s.sum_ns == 200500);
  CHECK(s.buckets[0] == 1 && s.buckets[7] == 2);
}

TEST(SpanTimerRecordsOnlyWithTracingAndAParent) {
  Observer o;
  wire::TraceContext parent;
  CHECK(wire::ParseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &parent));
  { SpanTimer s(&o, "off", &parent); }
  o.set_tracing(true);
  { SpanTimer s(&o, "no-parent", nullptr); }
  wire::TraceContext child_ctx;
  {
    SpanTimer s(&o, "hotpot.owner.prepare", &parent);
    CHECK(s.active());
    s.Attr("hotpot.dataset", int64_t(7));
    s.Attr("hotpot.outcome", std::string("ok"));
    child_ctx = s.context();
    s.End(Code::kAborted);
  }
  auto v = o.DrainSpans(10);
  CHECK(v.size() == 1);
  CHECK(v[0].name == "hotpot.owner.prepare");
  CHECK(wire::HexOf(v[0].trace_id, 16) == "0af7651916cd43dd8448eb211c80319c");
  CHECK(wire::HexOf(v[0].parent_span_id, 8) == "b7ad6b7169203331");
  CHECK(std::memcmp(v[0].span_id, child_ctx.span_id, 8) == 0);
  CHECK(v[0].status == Code::kAborted && v[0].end_unix_ns >= v[0].start_unix_ns);
  CHECK(v[0].int_attrs.size() == 1 && v[0].str_attrs.size() == 1);
  CHECK(o.DrainSpans(10).empty());
}

TEST(SpanQueueIsBounded) {
  Observer o;
  for (size_t i = 0; i < Observer::kMaxSpans + 5; i++) o.AddSpan(SpanRecord{});
  CHECK(o.spans_dropped() == 5);
  CHECK(o.DrainSpans(1u << 20).size() == Observer::kMaxSpans);
}

TEST(TraceScopeNestsAndRestores) {
  CHECK(CurrentTrace() == nullptr);
  wire::TraceContext a, b;
  NewTraceId(a.trace_id);
  NewSpanId(a.span_id);
  NewTraceId(b.trace_id);
  NewSpanId(b.span_id);
  {
    TraceScope sa(a);
    CHECK(CurrentTrace() != nullptr && std::memcmp(CurrentTrace()->trace_id, a.trace_id, 16) == 0);
    {
      TraceScope sb(b);
      CHECK(std::memcmp(CurrentTrace()->trace_id, b.trace_id, 16) == 0);
    }
    CHECK(std::memcmp(CurrentTrace()->trace_id, a.trace_id, 16) == 0);
  }
  CHECK(CurrentTrace() == nullptr);
}

TEST(TraceparentCodecRejectsMalformedInput) {
  wire::TraceContext t;
  const std::string good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  CHECK(wire::ParseTraceparent(good, &t));
  CHECK(wire::FormatTraceparent(t) == good);
  CHECK(t.flags == 1);
  CHECK(!wire::ParseTraceparent("", &t));
  CHECK(!wire::ParseTraceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &t));
  CHECK(!wire::ParseTraceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01", &t));
  CHECK(!wire::ParseTraceparent("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", &t));
  CHECK(!wire::ParseTraceparent("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", &t));
  CHECK(!wire::ParseTraceparent(good + "x", &t));
  CHECK(wire::FormatTraceparent(wire::TraceContext{}).empty());
}

// A failure every commit repeats (a push to a node killed a moment ago, until it is declared dead) is logged once
// every 5 s per key, and the next line says how many were left out; other keys are logged on their own.
TEST(LogLimitedLogsAKeyOnceEveryFiveSeconds) {
  struct StepTime : engine::TimeSource {
    engine::TimePoint now{};
    engine::TimePoint Now() override { return now; }
    uint64_t UnixMs() override { return 0; }
    void SleepFor(std::chrono::nanoseconds d) override { now += d; }
  } clock;
  std::vector<std::string> lines;
  engine::Context ctx;
  ctx.time = &clock;
  ctx.opt.log = [&](const std::string& line) { lines.push_back(line); };
  for (int i = 0; i < 1000; i++) {
    ctx.LogLimited("push 1", "push to node 1 failed");
    clock.SleepFor(std::chrono::milliseconds(2));
  }
  ctx.LogLimited("push 2", "push to node 2 failed");
  CHECK(lines.size() == 2 && lines[0] == "push to node 1 failed" && lines[1] == "push to node 2 failed");
  clock.SleepFor(std::chrono::seconds(3));  // 5 s after the first line
  ctx.LogLimited("push 1", "push to node 1 failed");
  CHECK(lines.size() == 3);
  CHECK(lines[2] == "push to node 1 failed (and 999 more like it in the last 5 s)");
  clock.SleepFor(std::chrono::seconds(6));
  ctx.LogLimited("push 1", "push to node 1 failed");
  CHECK(lines.size() == 4 && lines[3] == "push to node 1 failed");
}

TEST_MAIN("observe")
