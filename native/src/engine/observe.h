// Engine observability: what the original exposed as /proc/dsnvm-event, plus what tracing needs.
//   - an event ring (fixed size, one short critical section per recorded event) of internal events, filtered by
//     a runtime debug mask checked with one relaxed atomic load before anything else (the original's dbgmask);
//   - latency histograms (fault, fetch, commit) in fixed log2 buckets of microseconds, lock-free;
//   - span records: timings of each commit's committer-side phases and of each owner-side handling, with the
//     W3C trace context that came with the commit, drained by the node daemon which turns them into OTel spans.
// Everything here is called from data-path threads: no allocation happens when the mask/trace says "off".
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "wire/frame.h"
#include "wire/traceparent.h"

namespace hotpot {
namespace observe {

// Debug mask bits (HOTPOT debug mask; `hotpot events --mask`).
enum MaskBit : uint32_t {
  kMaskFaults = 1u << 0,      // page faults served (local and remote)
  kMaskFetch = 1u << 1,       // pages served to other nodes, fetch retries
  kMaskCommits = 1u << 2,     // commit start/end, aborts, conflicts (committer side)
  kMaskOwner = 1u << 3,       // owner-side prepare/apply/release handling
  kMaskCoherence = 1u << 4,   // coherence pushes sent
  kMaskReplicas = 1u << 5,    // replicas sent and received
  kMaskMembership = 1u << 6,  // membership changes
  kMaskAll = (1u << 7) - 1,
};
constexpr uint32_t kDefaultMask = kMaskFaults | kMaskCommits | kMaskMembership;

enum class EventKind : uint8_t {
  kFaultLocal = 1,
  kFaultRemote,
  kFetchServed,
  kCommitStart,
  kCommitEnd,
  kAbort,
  kConflict,
  kOwnerHandled,
  kCoherencePush,
  kReplicaSent,
  kReplicaReceived,
  kMembership,
  kFenced,        // a PREPARE refused because its sender was declared dead (node = sender, txid = that epoch)
  kRereplicated,  // background re-replication: page copies made on `node` (page = first, count = pages)
  // Chunk ownership moved (docs/design/availability.md "Handoff"); page = the chunk's first page, count = pages
  // promoted or demoted. kChunkOwned: this node owns it now (node = the previous owner, 0 = unknown);
  // kChunkHandedOff: it does not any more (node = the new owner).
  kChunkOwned,
  kChunkHandedOff,
  // Pages with no surviving copy found by this node recovering a chunk it owns (page = first, count = pages).
  kPagesLost,
};
const char* EventKindName(EventKind k);
uint32_t EventKindMask(EventKind k);

struct Event {
  uint64_t seq = 0;      // 1, 2, ... per engine; a gap between consecutive reads means events were overwritten
  uint64_t unix_ns = 0;  // CLOCK_REALTIME
  EventKind kind = EventKind::kFaultLocal;
  uint32_t node = 0;     // the other node involved (owner, committer, replica target), 0 = none
  uint64_t dataset = 0;
  uint64_t page = 0;
  uint64_t count = 0;    // pages (faults, fetches), ranges (commits), members (membership)
  uint64_t latency_ns = 0;
  uint64_t txid = 0;     // commit/owner events; the epoch for membership
  Code status = Code::kOk;
  char detail[24] = {};  // short tag: phase name, outcome
};

class EventRing {
 public:
  static constexpr size_t kCapacity = 4096;
  EventRing() : slots_(kCapacity) {}
  uint32_t mask() const { return mask_.load(std::memory_order_relaxed); }
  void set_mask(uint32_t m) { mask_.store(m & kMaskAll, std::memory_order_relaxed); }
  bool enabled(EventKind k) const { return (mask() & EventKindMask(k)) != 0; }
  // Records `e` (seq and time filled here) if its kind passes the mask.
  void Record(Event e);
  // Events with seq > after, oldest first, at most max. *next = the seq to pass next time.
  std::vector<Event> Read(uint64_t after, size_t max, uint64_t* next) const;
  uint64_t last_seq() const;

 private:
  std::atomic<uint32_t> mask_{kDefaultMask};
  mutable std::mutex mu_;
  std::vector<Event> slots_;
  uint64_t seq_ = 0;
};

// Fixed log2 buckets: bucket 0 = [0, 1) us, bucket i = [2^(i-1), 2^i) us, the last bucket is open-ended.
class Histogram {
 public:
  static constexpr size_t kBuckets = 28;  // up to 2^26 us ~ 67 s, then overflow
  void Add(uint64_t ns);
  struct Snapshot {
    uint64_t count = 0;
    uint64_t sum_ns = 0;
    uint64_t buckets[kBuckets] = {};
  };
  Snapshot Get() const;
  // Upper bound (us) of bucket i; the last is +inf (returned as 0).
  static uint64_t UpperBoundUs(size_t i) { return i + 1 < kBuckets ? (uint64_t(1) << i) : 0; }
  static size_t BucketOf(uint64_t ns);

 private:
  std::atomic<uint64_t> count_{0}, sum_ns_{0};
  std::atomic<uint64_t> buckets_[kBuckets] = {};
};

struct SpanRecord {
  std::string name;
  uint8_t trace_id[16] = {};
  uint8_t span_id[8] = {};
  uint8_t parent_span_id[8] = {};  // all zero = a root span
  uint64_t start_unix_ns = 0, end_unix_ns = 0;
  Code status = Code::kOk;
  std::vector<std::pair<std::string, std::string>> str_attrs;
  std::vector<std::pair<std::string, int64_t>> int_attrs;
};

uint64_t UnixNowNs();
uint64_t MonoNowNs();
void NewSpanId(uint8_t out[8]);
void NewTraceId(uint8_t out[16]);

// The trace context of the commit this thread runs (wire/traceparent.h).
using wire::CurrentTrace;
using wire::TraceScope;
// Remote fetch runs made by this thread so far (the fault path tells local from remote service with it).
uint64_t& ThreadFetchRuns();

// Committer-side phases of the commit running on this thread: StartPhase ends the open phase (a span child of the
// node's commit span) and opens the next one. No-op unless a CommitPhases is active on the thread.
void StartPhase(const char* name);

class Observer;
class CommitPhases {
 public:
  CommitPhases(Observer* obs, const wire::TraceContext& parent);
  ~CommitPhases();
  CommitPhases(const CommitPhases&) = delete;
  CommitPhases& operator=(const CommitPhases&) = delete;
  void Start(const char* name);

 private:
  void Close();
  Observer* obs_;
  wire::TraceContext parent_;
  CommitPhases* prev_;
  const char* open_ = nullptr;
  uint64_t open_since_ = 0;
};

class Observer {
 public:
  EventRing& events() { return events_; }
  Histogram& fault_latency() { return fault_; }
  Histogram& fetch_latency() { return fetch_; }
  Histogram& commit_latency() { return commit_; }

  void Emit(const Event& e) {
    if (events_.enabled(e.kind)) events_.Record(e);
  }
  // Span records are kept only while someone drains them (the node daemon enables this when tracing is on).
  bool tracing() const { return tracing_.load(std::memory_order_relaxed); }
  void set_tracing(bool on) { tracing_.store(on, std::memory_order_relaxed); }
  // One remote page fault in `n` becomes a root span (0 = none).
  void set_fault_sample(uint32_t n) { fault_sample_.store(n, std::memory_order_relaxed); }
  bool SampleFault();
  void AddSpan(SpanRecord&& r);
  std::vector<SpanRecord> DrainSpans(size_t max);
  uint64_t spans_dropped() const { return spans_dropped_.load(); }

  static constexpr size_t kMaxSpans = 8192;

 private:
  EventRing events_;
  Histogram fault_, fetch_, commit_;
  std::atomic<bool> tracing_{false};
  std::atomic<uint32_t> fault_sample_{0};
  std::atomic<uint64_t> fault_counter_{0};
  std::atomic<uint64_t> spans_dropped_{0};
  std::mutex span_mu_;
  std::deque<SpanRecord> spans_;
};

// Times one span from construction to End/destruction and records it when tracing is on and the parent context is
// valid. The span's own id is fixed at construction, so calls made inside can carry it as their parent (context()).
class SpanTimer {
 public:
  SpanTimer(Observer* obs, const char* name, const wire::TraceContext* parent);
  ~SpanTimer() { End(Code::kOk); }
  SpanTimer(const SpanTimer&) = delete;
  SpanTimer& operator=(const SpanTimer&) = delete;
  bool active() const { return active_; }
  // This span as a parent context for calls made inside it.
  const wire::TraceContext& context() const { return ctx_; }
  void Attr(const char* key, int64_t v) {
    if (active_) rec_.int_attrs.emplace_back(key, v);
  }
  void Attr(const char* key, const std::string& v) {
    if (active_) rec_.str_attrs.emplace_back(key, v);
  }
  void End(Code status);

 private:
  Observer* obs_;
  bool active_ = false;
  wire::TraceContext ctx_;
  SpanRecord rec_;
};

}  // namespace observe
}  // namespace hotpot
