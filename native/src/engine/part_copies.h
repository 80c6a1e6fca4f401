// Prepare copies (docs/design/availability.md "Replicated prepare"). Owner side: before an owner answers PREPARE (or
// applies a one-shot part) it logs the prepared part on N-1 other alive nodes (PREPARE_COPY), so the part is durable on
// N nodes before any of it becomes visible, and a node taking over a dead owner's chunk has every part that was in
// flight there; once the part is finished its copies are released, off the commit's critical path (riding on the
// owner's next PREPARE_COPY to that node, or in RELEASE_COPIES when none comes at once) — unless it was applied with
// fewer than N page copies: then they are marked applied (MarkApplied) and kept until its owner has the pages back at
// N copies (Owner::KeptCopies).
// Holder side: copies are kept in this node's redo log (phase kCopy or kCopyApplied, surviving a restart) until
// released, or until their owner, alive, says it no longer has the part (PART_STATUS, asked about copies older than
// 4 x the request timeout: a lost release, or an owner that restarted and finished the part from its own redo log).
// A leaf over Peers, the cluster view and the pool's redo log: it calls no other component.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "engine/cluster_view.h"
#include "engine/core.h"
#include "engine/messages.h"
#include "engine/peers.h"

namespace hotpot {
namespace engine {

// A redo record (an owner's part, or a kept copy) as a PREPARE_COPY body.
msg::PartCopy CopyOfRecord(const pool::RedoRecord& r);

class PartCopies {
 public:
  PartCopies(Context* ctx, ClusterView* view, Peers* peers) : ctx_(ctx), view_(view), peers_(peers) {}
  ~PartCopies() { Stop(); }

  // The release sender thread. Without it (manual mode, deterministic tests) releases go out at Flush.
  void Start();
  void Stop();

  // ---- owner side
  // Logs `c` on `want` alive nodes other than this one, tried in ascending id order starting after this node (so
  // owners spread their copies), nodes that failed a copy within the last request timeout last; while more nodes
  // are left than still needed, a node gets half the time left, so one that hangs (paused, not yet declared dead)
  // costs a commit half its deadline once, not the whole of it every time. *holders receives the nodes that hold it.
  // When fewer than `want` take it, the copies made are released and the answer is UNAVAILABLE: the part must not be
  // prepared.
  // *withdrawn (optional) says whether the copies made were all withdrawn again after a failure. Nodes in `exclude`
  // (optional) are not asked (they hold a copy already).
  Status Send(const msg::PartCopy& c, uint32_t want, Deadline deadline, std::vector<uint32_t>* holders,
              bool* withdrawn = nullptr, const std::vector<uint32_t>* exclude = nullptr);
  // Releases part `key`'s copies at once (not queued): true when every holder answered (a node that is down keeps
  // its copy). Never called under a caller's lock.
  bool ReleaseNow(const TxKey& key, const std::vector<uint32_t>& holders);
  // The part is finished (applied and released, or dropped): its copies go. Queued; never blocks on a peer (callers
  // may hold their own locks).
  void Release(const TxKey& key, const std::vector<uint32_t>& holders);
  // Tells `holders` to keep their copy of the part with `flag` (PREPARE_COPY again): kCopyApplied when the part was
  // applied with fewer than N page copies, so a node taking the chunk over completes the part from it instead of
  // asking about it or reading a later part's copy as its end; kCopyFrozen when the part was frozen (COMMIT_STATE), so
  // a node taking the chunk over adopts it frozen. *told receives those that answered (this node's own copy is marked
  // here); a holder that is down, or the deadline passing, leaves it out.
  void Mark(const msg::PartCopy& c, uint32_t flag, const std::vector<uint32_t>& holders, Deadline deadline,
            std::vector<uint32_t>* told);
  // Sends every queued release now (the thread does it as they come; manual mode calls it).
  void Flush();
  // Part `key`'s copies are still queued for release (or being released) at a holder that is alive: a takeover may
  // still find one. A committer keeps the decision of an under-replicated part until this is false (its copy could
  // be the part's only trace, and "aborted", presumed, would discard it).
  bool Releasing(const TxKey& key);

  // ---- holder side
  // At start, before the transport listens: the copies found in the redo log.
  void Load();
  // PREPARE_COPY from `owner`: logged durably before the answer. A copy already held (a retried message) is OK. With
  // kCopyApplied every copy of the part held here is marked applied in place (durably), whichever owner it came from;
  // with kCopyFrozen every one not applied is marked frozen.
  Status Keep(uint32_t owner, const msg::PartCopy& c);
  // Part `part` is known to be applied: every copy of it held here (any owner) says so from now on. "Applied" is a fact
  // about the part: an older owner's copy left unmarked here (its chunk moved on before it was collected) was read by a
  // later takeover as undecided where its pages sat at a bare era floor, and its committer's decision, driven again
  // after a restart, applied it over later commits (simulation seed 2716 with SIM_RESTARTS_HEAVY=1).
  Status NoteApplied(const TxKey& part);
  // RELEASE_COPIES from `owner`.
  void Drop(uint32_t owner, const std::vector<std::pair<uint32_t, uint64_t>>& keys);
  // Copies kept longer than 4 x the request timeout whose owner is alive: asks the owner (PART_STATUS) and drops the
  // ones it no longer has. A copy of an owner that is not alive is kept (it may be needed to take its chunks over).
  void CollectOrphans();
  // LIST_COPIES: the copies held here (any owner) with a range in pages [first, first + count) of dataset `ds`.
  std::vector<msg::OwnedCopy> List(uint64_t ds, uint64_t first, uint64_t count);
  // A copy of `owner`'s part `key` is kept here.
  bool Holds(uint32_t owner, const TxKey& key);
  // How many copies this node holds (for Stats and tests), and those of `owner`'s parts (any dataset).
  size_t Held();
  std::vector<TxKey> HeldFor(uint32_t owner);

 private:
  struct CopyKey {
    uint32_t owner;
    TxKey part;
    bool operator<(const CopyKey& o) const { return owner != o.owner ? owner < o.owner : part < o.part; }
  };
  struct Kept {
    uint32_t slot = 0;
    uint64_t dataset = 0;
    TimePoint at;
    bool applied = false;  // kCopyApplied
    bool frozen = false;   // kCopyFrozen
  };
  // Moves the kept copies of `part` to kCopyApplied or kCopyFrozen (durably; mu_ held).
  Status SetCopyPhaseLocked(const TxKey& part, pool::RedoPhase phase);
  void Loop();
  using Keys = std::vector<std::pair<uint32_t, uint64_t>>;
  // Takes up to kMaxPartKeys releases queued for `node`, to ride on a copy sent there: the caller settles them once
  // answered, or queues them again (RequeueLocked).
  Keys TakeReleases(uint32_t node);
  // Puts keys[from..] back at the front of `node`'s queue (mu_ held), dropping the oldest past kMaxQueuedReleases.
  void RequeueLocked(uint32_t node, const Keys& keys, size_t from);
  // Sends the queued releases, each holder's at once with the others' (mu_ NOT held while calling peers), so a holder
  // that hangs delays no other's; those an alive holder did not answer go back to the queue. False when some did.
  bool SendReleases(std::map<uint32_t, Keys> batch);
  static constexpr std::chrono::milliseconds kReleaseRetry{200};
  static constexpr size_t kMaxQueuedReleases = 1 << 16;

  Context* ctx_;
  ClusterView* view_;
  Peers* peers_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
  std::map<CopyKey, Kept> kept_;
  std::map<uint32_t, Keys> releases_;  // holder -> parts to release there
  std::map<uint32_t, TimePoint> failed_until_;  // nodes a copy failed to recently: tried last until then
  std::set<uint32_t> failing_;                  // holders whose last release was not answered (logged once)
  std::map<TxKey, uint32_t> releasing_;         // part -> holders its release is queued or in flight for
  // The releases [from, to) of `keys` are settled (answered, or given up: the holder is down or the queue is full).
  void SettledLocked(const std::vector<std::pair<uint32_t, uint64_t>>& keys, size_t from, size_t to);
};

}  // namespace engine
}  // namespace hotpot
