// What the engine's components share (docs/design/engine.md "Rooms"): the keys they index by, a dataset's state,
// the engine's time source, its counters, and the Context every component receives from the facade. Nothing here
// calls the network or takes a component's lock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "common/fault_points.h"
#include "common/status.h"
#include "engine/deps.h"
#include "transport/rdma_transport.h"
#include "engine/engine.h"
#include "engine/observe.h"
#include "pool/pool.h"
#include "transport/transport.h"

namespace hotpot {
namespace engine {

using pool::PageMeta;
using pool::PageState;
using transport::Deadline;

struct PageKey {
  uint64_t ds;
  uint64_t page;
  bool operator<(const PageKey& o) const { return ds != o.ds ? ds < o.ds : page < o.page; }
};

// A part of a commit at its owner: the committer's node and the part's txid (unique cluster-wide: the committer's
// node id is in its top bits).
struct TxKey {
  uint32_t committer;
  uint64_t txid;
  bool operator<(const TxKey& o) const { return committer != o.committer ? committer < o.committer : txid < o.txid; }
};

// An open mark on a node (NodeCache): (the commit's committer, or the owner for a split one-shot push; the id).
using MarkKey = std::pair<uint32_t, uint64_t>;
// The mark of a dataset whose cached copies may have missed commits (node ids start at 1, so no commit has it).
constexpr MarkKey kUncheckedMark{0, 0};

struct DatasetState {
  DatasetInfo info;
  pool::DatasetStore* store = nullptr;
  uint32_t chunk_size = 0;
};

std::string PageName(uint64_t ds, uint64_t page);
// The chunk's owner per the chunk map; false when the map has no entry for the page's chunk.
bool ChunkOwner(const DatasetState& d, uint64_t page, uint32_t* owner);
inline uint32_t ChunkOf(const DatasetState& d, uint64_t page) { return uint32_t(page * kPageSize / d.chunk_size); }
// The chunk map's entry for the page's chunk (nullptr when the map has none).
const ChunkInfo* ChunkEntry(const DatasetState& d, uint64_t page);
// The lowest version the page's owner may give it: era << kEraShift (0 for a chunk that never failed over). A new
// version is max(current, floor) + 1; an owned page never written is zeros at the floor.
uint64_t VersionFloor(const DatasetState& d, uint64_t page);



// Exponential backoff on the engine's time source: Wait() sleeps first << attempt (at most `cap`) and returns true,
// or returns false without sleeping: when the retry is a call that needs time to complete before the same deadline
// (`leave_room`), once the sleep twice over would reach the deadline; for a budget, once the deadline has passed (the
// last sleep is cut to end at it, so one more try is made there).
class Backoff {
 public:
  Backoff(TimeSource* time, std::chrono::microseconds first, std::chrono::microseconds cap, Deadline deadline,
          bool leave_room = true)
      : time_(time), first_(first), cap_(cap), deadline_(deadline), room_(leave_room ? 2 : 1) {}
  bool Wait();
  int attempts() const { return attempt_; }

 private:
  TimeSource* time_;
  std::chrono::microseconds first_, cap_;
  Deadline deadline_;
  int room_;
  int attempt_ = 0;
};

// The engine's counters, one per line of counters.def (EngineCounters is their snapshot).
struct Counters {
#define HOTPOT_COUNTER(field, ...) std::atomic<uint64_t> field{0};
#include "engine/counters.def"
#undef HOTPOT_COUNTER
};

// Set up by the facade before any component exists; outlives them all.
class FanOut;

struct Context {
  EngineOptions opt;
  TimeSource* time = nullptr;
  transport::Transport* transport = nullptr;
  // The same transport when it reads pages by one-sided RDMA READ (transport rdma), else nullptr.
  transport::RdmaTransport* rdma = nullptr;
  pool::Pool* pool = nullptr;
  observe::Observer* obs = nullptr;
  // Runs a commit's steps to different owners at once (fan_out.h); null in deterministic tests (in order, on the
  // calling thread).
  FanOut* fan_out = nullptr;
  Counters counters;
  std::atomic<bool> shut{false};
  std::atomic<uint32_t> node_id{0};
  // The pool's store was made empty by this process (a replaced machine, a reboot with durability memory, a wiped
  // disk): it holds none of the copies this node held before (set once at start).
  bool store_created = false;
  // The highest membership epoch whose changes this node has applied (peers set, and the holders a member with a
  // replaced store no longer is forgotten): what a re-replication pass started now knows.
  std::atomic<uint64_t> members_epoch{0};
  // Wakes the resolver before its next period (set by the facade; empty in manual mode).
  std::function<void()> wake_resolver;
  // Until when this node's membership lease is surely valid (unix ms; 0 = no control plane has set one): past it the
  // node may have been declared dead and its chunks given to another node, so it stops serving as owner (self-fencing,
  // Owner::CheckLease) until a renewal moves it on.
  std::atomic<uint64_t> lease_until_ms{0};
  // Bumped each time the membership lease is found run out (then this node may have been declared dead, its
  // participants settling its commits without it: docs/design/availability.md "A dead committer").
  std::atomic<uint64_t> lease_lapses{0};
  // The lease ran out since `lapses` was read from lease_lapses, or has run out now.
  bool LeaseLapsedSince(uint64_t lapses) const {
    const uint64_t until = lease_until_ms.load();
    return lease_lapses.load() != lapses || (until != 0 && time->UnixMs() >= until);
  }
  // MRSW leases with a fencing epoch below this ended at the dispatcher (this node was declared dead, left or
  // restarted): its committer refuses them rather than let a stale certificate write next to a newer holder.
  std::atomic<uint64_t> mrsw_lease_floor{0};

  uint32_t self() const { return node_id.load(); }
  void Log(const std::string& line) const {
    if (opt.log) opt.log(line);
  }
  // Logs `line` at most once every 5 s per `key` (a failure repeated by every commit — pushes to a node killed a
  // moment ago, until it is declared dead — logged thousands of lines a second); the next line logged for the key
  // says how many like it were left out.
  void LogLimited(const std::string& key, const std::string& line);
  // A step (a request, a commit, a fault, a lock held) that took half the request timeout or more: worth a log line
  // saying where the time went (its caller may have given up, and nothing else says).
  bool Slow(std::chrono::nanoseconds took) const { return took >= opt.request_timeout / 2; }
  // An event for `hotpot events` (filtered by the debug mask first: a masked-out site costs one load).
  void Note(observe::EventKind kind, uint32_t node, uint64_t ds, uint64_t page, uint64_t count = 0,
            uint64_t txid = 0) const;
  Deadline NewDeadline() const { return time->Now() + opt.request_timeout; }
  // The same deadline as wall-clock unix ms, for PREPARE (owners compare it with their clocks).
  uint64_t DeadlineUnixMs() const {
    return time->UnixMs() + uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(opt.request_timeout).count());
  }
  // Runs one owner-side step under a span (parent: the commit's trace context) and an `owner` event.
  Status Owned(const char* name, uint32_t committer, uint64_t ds, uint64_t txid, const std::function<Status()>& fn);
  // Where steps to different nodes run at once (fan_out.h RunSteps): in order on the calling thread with a fault
  // point armed (a crash test expects "the first part applied, the others not yet") or in a deterministic test.
  FanOut* fan() const { return faults.armed() ? nullptr : fan_out; }
  // Test builds only (common/fault_points.h): exits or pauses here when HOTPOT_FAULT_POINT names `point`.
  void Fault(FaultPoint point) {
    faults.Reach(point, [this](const std::string& line) { Log("engine: " + line); });
  }
  FaultPoints faults;

 private:
  struct Limited {
    TimePoint next{};
    uint64_t left_out = 0;
  };
  std::mutex limited_mu_;
  std::map<std::string, Limited> limited_;
};

}  // namespace engine
}  // namespace hotpot
