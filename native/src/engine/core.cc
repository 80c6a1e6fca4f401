#include "engine/core.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <thread>

namespace hotpot {
namespace engine {

void Context::LogLimited(const std::string& key, const std::string& line) {
  if (!opt.log) return;
  const TimePoint now = time->Now();
  uint64_t left_out = 0;
  {
    std::lock_guard<std::mutex> l(limited_mu_);
    Limited& e = limited_[key];
    if (now < e.next) {
      e.left_out++;
      return;
    }
    left_out = e.left_out;
    e.left_out = 0;
    e.next = now + std::chrono::seconds(5);
    if (limited_.size() > 4096) {  // keys of nodes long gone: drop the ones not due
      for (auto it = limited_.begin(); it != limited_.end();)
        it = it->second.next < now && it->second.left_out == 0 ? limited_.erase(it) : std::next(it);
    }
  }
  Log(left_out == 0 ? line : line + " (and " + std::to_string(left_out) + " more like it in the last 5 s)");
}

std::string PageName(uint64_t ds, uint64_t page) {
  return "dataset " + std::to_string(ds) + " page " + std::to_string(page);
}

const ChunkInfo* ChunkEntry(const DatasetState& d, uint64_t page) {
  const uint32_t chunk = ChunkOf(d, page);
  // Chunk maps list chunks in index order; fall back to a scan for a map that does not.
  if (chunk < d.info.chunks.size() && d.info.chunks[chunk].index == chunk) return &d.info.chunks[chunk];
  for (const ChunkInfo& c : d.info.chunks)
    if (c.index == chunk) return &c;
  return nullptr;
}

bool ChunkOwner(const DatasetState& d, uint64_t page, uint32_t* owner) {
  const ChunkInfo* c = ChunkEntry(d, page);
  if (c == nullptr) return false;
  *owner = c->owner;
  return true;
}

uint64_t VersionFloor(const DatasetState& d, uint64_t page) {
  const ChunkInfo* c = ChunkEntry(d, page);
  return c == nullptr ? 0 : uint64_t(c->era) << kEraShift;
}

namespace {
class RealTimeSource final : public TimeSource {
 public:
  TimePoint Now() override { return std::chrono::steady_clock::now(); }
  uint64_t UnixMs() override {
    return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count());
  }
  void SleepFor(std::chrono::nanoseconds d) override { std::this_thread::sleep_for(d); }
};
}  // namespace

std::shared_ptr<TimeSource> RealTime() { return std::make_shared<RealTimeSource>(); }

bool Backoff::Wait() {
  auto d = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::min<std::chrono::microseconds>(cap_, first_ * (int64_t(1) << std::min(attempt_, 20))));
  const TimePoint now = time_->Now();
  if (room_ == 2) {
    if (now + 2 * d >= deadline_) return false;
  } else {
    // A budget, not a call deadline: the last wait ends at the deadline, and one more try is made then.
    if (now >= deadline_) return false;
    d = std::min<std::chrono::nanoseconds>(d, deadline_ - now);
  }
  time_->SleepFor(d);
  attempt_++;
  return true;
}

void Context::Note(observe::EventKind kind, uint32_t node, uint64_t ds, uint64_t page, uint64_t count,
                   uint64_t txid) const {
  if (!obs->events().enabled(kind)) return;
  observe::Event e;
  e.kind = kind;
  e.node = node;
  e.dataset = ds;
  e.page = page;
  e.count = count;
  e.txid = txid;
  obs->Emit(e);
}

Status Context::Owned(const char* name, uint32_t committer, uint64_t ds, uint64_t txid,
                      const std::function<Status()>& fn) {
  const uint64_t mono0 = observe::MonoNowNs();
  observe::SpanTimer span(obs, name, observe::CurrentTrace());
  Status st = fn();
  const uint64_t ns = observe::MonoNowNs() - mono0;
  if (span.active()) {
    span.Attr("hotpot.node", int64_t(self()));
    span.Attr("hotpot.committer", int64_t(committer));
    span.Attr("hotpot.txid", int64_t(txid));
    if (ds != 0) span.Attr("hotpot.dataset", int64_t(ds));
    span.Attr("hotpot.outcome", std::string(CodeName(st.code())));
  }
  span.End(st.code());
  if (obs->events().enabled(observe::EventKind::kOwnerHandled)) {
    observe::Event e;
    e.kind = observe::EventKind::kOwnerHandled;
    e.node = committer;
    e.dataset = ds;
    e.txid = txid;
    e.latency_ns = ns;
    e.status = st.code();
    const char* step = std::strrchr(name, '.');
    std::snprintf(e.detail, sizeof e.detail, "%s", step ? step + 1 : name);
    obs->Emit(e);
  }
  return st;
}

}  // namespace engine
}  // namespace hotpot
