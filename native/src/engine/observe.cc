#include "engine/observe.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "common/bytes.h"
#include "common/random.h"

namespace hotpot {
namespace observe {

const char* EventKindName(EventKind k) {
  switch (k) {
    case EventKind::kFaultLocal: return "fault_local";
    case EventKind::kFaultRemote: return "fault_remote";
    case EventKind::kFetchServed: return "fetch_served";
    case EventKind::kCommitStart: return "commit_start";
    case EventKind::kCommitEnd: return "commit_end";
    case EventKind::kAbort: return "abort";
    case EventKind::kConflict: return "conflict";
    case EventKind::kOwnerHandled: return "owner";
    case EventKind::kCoherencePush: return "coherence_push";
    case EventKind::kReplicaSent: return "replica_sent";
    case EventKind::kReplicaReceived: return "replica_received";
    case EventKind::kMembership: return "membership";
    case EventKind::kFenced: return "fenced";
    case EventKind::kRereplicated: return "rereplicated";
    case EventKind::kChunkOwned: return "chunk_owned";
    case EventKind::kChunkHandedOff: return "chunk_handed_off";
    case EventKind::kPagesLost: return "pages_lost";
  }
  return "unknown";
}

uint32_t EventKindMask(EventKind k) {
  switch (k) {
    case EventKind::kFaultLocal:
    case EventKind::kFaultRemote: return kMaskFaults;
    case EventKind::kFetchServed: return kMaskFetch;
    case EventKind::kCommitStart:
    case EventKind::kCommitEnd:
    case EventKind::kAbort:
    case EventKind::kConflict: return kMaskCommits;
    case EventKind::kOwnerHandled: return kMaskOwner;
    case EventKind::kCoherencePush: return kMaskCoherence;
    case EventKind::kReplicaSent:
    case EventKind::kReplicaReceived: return kMaskReplicas;
    case EventKind::kMembership:
    case EventKind::kFenced: return kMaskMembership;
    case EventKind::kRereplicated: return kMaskReplicas;
    case EventKind::kChunkOwned:
    case EventKind::kChunkHandedOff:
    case EventKind::kPagesLost: return kMaskMembership;
  }
  return 0;
}

uint64_t UnixNowNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);  // cannot fail for a valid clock id and pointer
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

uint64_t MonoNowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

namespace {
// Span and trace ids need uniqueness, not secrecy: a per-thread generator seeded once from the kernel.
uint64_t NextId() {
  thread_local std::mt19937_64 gen = [] {
    uint64_t seed = 0;
    if (!RandomBytes(reinterpret_cast<uint8_t*>(&seed), sizeof seed).ok()) seed = MonoNowNs() ^ UnixNowNs();
    return std::mt19937_64(seed);
  }();
  uint64_t v;
  do {
    v = gen();
  } while (v == 0);
  return v;
}
}  // namespace

void NewSpanId(uint8_t out[8]) { PutU64(out, NextId()); }

void NewTraceId(uint8_t out[16]) {
  PutU64(out, NextId());
  PutU64(out + 8, NextId());
}

// ---------------------------------------------------------------------------------------------------------------
// Event ring

void EventRing::Record(Event e) {
  e.unix_ns = UnixNowNs();
  std::lock_guard<std::mutex> l(mu_);
  e.seq = ++seq_;
  slots_[e.seq % kCapacity] = e;
}

uint64_t EventRing::last_seq() const {
  std::lock_guard<std::mutex> l(mu_);
  return seq_;
}

std::vector<Event> EventRing::Read(uint64_t after, size_t max, uint64_t* next) const {
  std::vector<Event> out;
  std::lock_guard<std::mutex> l(mu_);
  uint64_t oldest = seq_ >= kCapacity ? seq_ - kCapacity + 1 : 1;
  uint64_t from = std::max(after + 1, oldest);
  for (uint64_t s = from; s <= seq_ && out.size() < max; s++) out.push_back(slots_[s % kCapacity]);
  *next = out.empty() ? std::max(after, from - 1) : out.back().seq;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Histograms

size_t Histogram::BucketOf(uint64_t ns) {
  uint64_t us = ns / 1000;
  if (us == 0) return 0;
  size_t b = size_t(64 - __builtin_clzll(us));  // us in [2^(b-1), 2^b)
  return std::min(b, kBuckets - 1);
}

void Histogram::Add(uint64_t ns) {
  buckets_[BucketOf(ns)].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Get() const {
  Snapshot s;
  for (size_t i = 0; i < kBuckets; i++) s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
  // The count is the bucket total, so a snapshot is self-consistent even while Add runs concurrently.
  for (uint64_t b : s.buckets) s.count += b;
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Per-thread fault bookkeeping

uint64_t& ThreadFetchRuns() {
  thread_local uint64_t runs = 0;
  return runs;
}

// ---------------------------------------------------------------------------------------------------------------
// Spans

namespace {
thread_local CommitPhases* tls_phases = nullptr;
}  // namespace

void StartPhase(const char* name) {
  if (tls_phases != nullptr) tls_phases->Start(name);
}

CommitPhases::CommitPhases(Observer* obs, const wire::TraceContext& parent)
    : obs_(obs), parent_(parent), prev_(tls_phases) {
  tls_phases = this;
}

CommitPhases::~CommitPhases() {
  Close();
  tls_phases = prev_;
}

void CommitPhases::Start(const char* name) {
  Close();
  open_ = name;
  open_since_ = UnixNowNs();
}

void CommitPhases::Close() {
  if (open_ == nullptr) return;
  if (obs_ != nullptr && obs_->tracing() && parent_.valid()) {
    SpanRecord r;
    r.name = open_;
    std::memcpy(r.trace_id, parent_.trace_id, 16);
    std::memcpy(r.parent_span_id, parent_.span_id, 8);
    NewSpanId(r.span_id);
    r.start_unix_ns = open_since_;
    r.end_unix_ns = UnixNowNs();
    obs_->AddSpan(std::move(r));
  }
  open_ = nullptr;
}

bool Observer::SampleFault() {
  uint32_t n = fault_sample_.load(std::memory_order_relaxed);
  if (n == 0 || !tracing()) return false;
  return fault_counter_.fetch_add(1, std::memory_order_relaxed) % n == 0;
}

void Observer::AddSpan(SpanRecord&& r) {
  std::lock_guard<std::mutex> l(span_mu_);
  if (spans_.size() >= kMaxSpans) {
    spans_.pop_front();  // nobody drains fast enough: keep the newest
    spans_dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  spans_.push_back(std::move(r));
}

std::vector<SpanRecord> Observer::DrainSpans(size_t max) {
  std::vector<SpanRecord> out;
  std::lock_guard<std::mutex> l(span_mu_);
  while (!spans_.empty() && out.size() < max) {
    out.push_back(std::move(spans_.front()));
    spans_.pop_front();
  }
  return out;
}

SpanTimer::SpanTimer(Observer* obs, const char* name, const wire::TraceContext* parent) : obs_(obs) {
  if (obs_ == nullptr || !obs_->tracing() || parent == nullptr || !parent->valid()) return;
  active_ = true;
  rec_.name = name;
  std::memcpy(rec_.trace_id, parent->trace_id, 16);
  std::memcpy(rec_.parent_span_id, parent->span_id, 8);
  NewSpanId(rec_.span_id);
  std::memcpy(ctx_.trace_id, parent->trace_id, 16);
  std::memcpy(ctx_.span_id, rec_.span_id, 8);
  ctx_.flags = parent->flags;
  rec_.start_unix_ns = UnixNowNs();
}

void SpanTimer::End(Code status) {
  if (!active_) return;
  active_ = false;
  rec_.end_unix_ns = UnixNowNs();
  rec_.status = status;
  obs_->AddSpan(std::move(rec_));
}

}  // namespace observe
}  // namespace hotpot
